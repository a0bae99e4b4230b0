// hello-node: a tierfaas function in Node.js, behind the exec runtime's http protocol
// (docs/exec-protocol.md). It is a plain HTTP/1.1 server, no npm packages, on the Unix socket
// $SOCKET_PATH when that is set (the manifest's listen = "unix": the node reaches it with less
// kernel work per call than over TCP) or else on 127.0.0.1:$PORT. The node sends it each call with the path after /function/hello-node, the query,
// the caller's headers and body; its status, headers and body are the answer.
//
//   GET  /healthz      200 "ok" (the manifest's ready_path)
//   ANY  /json?x=1     what the function received: method, path, query, the x-demo header
//                      and the body's length, as JSON
//   ANY  anything else "Hello from Node.js, <body>" ("world" for an empty body)
"use strict";
const http = require("node:http");

const socketPath = process.env.SOCKET_PATH;
const port = Number(process.env.PORT);
if (!socketPath && (!Number.isInteger(port) || port <= 0)) {
  console.error(
    "hello-node: neither SOCKET_PATH nor PORT is set; tierfaas sets one for protocol = \"http\"",
  );
  process.exit(1);
}

function send(res, status, contentType, text) {
  const body = Buffer.from(text);
  res.writeHead(status, { "Content-Type": contentType, "Content-Length": body.length });
  res.end(body);
}

const server = http.createServer((req, res) => {
  const chunks = [];
  req.on("data", (chunk) => chunks.push(chunk));
  req.on("end", () => {
    const body = Buffer.concat(chunks);
    const url = new URL(req.url, "http://function.invalid");
    if (url.pathname === "/healthz") {
      send(res, 200, "text/plain", "ok");
    } else if (url.pathname === "/json") {
      const seen = {
        method: req.method,
        path: url.pathname,
        query: Object.fromEntries(url.searchParams),
        demo: req.headers["x-demo"] ?? null,
        bodyBytes: body.length,
        function: process.env.TIERFAAS_FUNCTION ?? null,
      };
      send(res, 200, "application/json", JSON.stringify(seen));
    } else {
      const name = body.length > 0 ? body.toString("utf8") : "world";
      send(res, 200, "text/plain; charset=utf-8", `Hello from Node.js, ${name}`);
    }
  });
});

if (socketPath) {
  server.listen(socketPath);
} else {
  server.listen(port, "127.0.0.1");
}
