/*
 * hello-c: a tierfaas function in C, speaking the stdio protocol (docs/exec-protocol.md).
 *
 * stdin and stdout are one socket to the node. The program says READY, then answers each
 * CALL frame with a RESULT frame: "Hello from C, <body>" ("world" for an empty body).
 * Calls may be pipelined; they are answered in the order they came, and the answers made
 * while input is at hand leave in one write, before the program waits for more. End of
 * input (the node closed the socket) exits 0; a malformed frame exits 1 with the reason on
 * stderr, which reaches the node's log.
 */
#include <errno.h>
#include <inttypes.h>
#include <signal.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define LINE_MAX_BYTES 256   /* a header line, its "\n" included */
#define BODY_CAP (16u << 20) /* well above the node's default --max-body-bytes (6 MiB) */
#define REQUEST_ID_MAX 64

static const char GREETING[] = "Hello from C, ";
static const char NOBODY[] = "world";

/* Input read from the node and not yet consumed: in[in_start..in_end). */
static char in[1 << 16];
static size_t in_start, in_end;

/* Answers not yet written. */
static char *out;
static size_t out_len, out_cap;

static void fail(const char *format, ...)
{
    va_list args;
    va_start(args, format);
    fputs("hello-c: ", stderr);
    vfprintf(stderr, format, args);
    fputc('\n', stderr);
    va_end(args);
    exit(1);
}

static void out_append(const void *data, size_t n)
{
    if (out_cap - out_len < n) {
        size_t cap = out_cap ? out_cap : 4096;
        while (cap - out_len < n)
            cap *= 2;
        char *grown = realloc(out, cap);
        if (grown == NULL)
            fail("out of memory for a %zu-byte answer", n);
        out = grown;
        out_cap = cap;
    }
    memcpy(out + out_len, data, n);
    out_len += n;
}

static void flush_out(void)
{
    size_t done = 0;
    while (done < out_len) {
        ssize_t n = write(STDOUT_FILENO, out + done, out_len - done);
        if (n < 0) {
            if (errno == EINTR)
                continue;
            fail("write: %s", strerror(errno));
        }
        done += (size_t)n;
    }
    out_len = 0;
}

/* Reads more input; the answers made so far leave first, since the node may wait for them
 * before it sends more. Returns the bytes read: 0 at end of input. Callers leave room in
 * the buffer (a line is at most LINE_MAX_BYTES; a body is consumed as it comes). */
static size_t fill(void)
{
    flush_out();
    memmove(in, in + in_start, in_end - in_start);
    in_end -= in_start;
    in_start = 0;
    for (;;) {
        ssize_t n = read(STDIN_FILENO, in + in_end, sizeof in - in_end);
        if (n >= 0) {
            in_end += (size_t)n;
            return (size_t)n;
        }
        if (errno != EINTR)
            fail("read: %s", strerror(errno));
    }
}

/* The next header line without its "\n", in line[LINE_MAX_BYTES]; NULL at end of input
 * between frames. */
static char *read_line(char *line)
{
    for (;;) {
        size_t avail = in_end - in_start;
        size_t scan = avail < LINE_MAX_BYTES ? avail : LINE_MAX_BYTES;
        char *newline = memchr(in + in_start, '\n', scan);
        if (newline != NULL) {
            size_t n = (size_t)(newline - (in + in_start));
            memcpy(line, in + in_start, n);
            line[n] = '\0';
            in_start += n + 1;
            if (strlen(line) != n)
                fail("a NUL byte in a header line");
            return line;
        }
        if (avail >= LINE_MAX_BYTES)
            fail("a header line is over %d bytes", LINE_MAX_BYTES);
        if (fill() == 0) {
            if (avail == 0)
                return NULL;
            fail("end of input inside a header line");
        }
    }
}

/* Splits line at single spaces into at most max fields (the last one keeps the rest). */
static size_t split(char *line, char **fields, size_t max)
{
    size_t count = 0;
    char *p = line;
    while (count < max) {
        fields[count++] = p;
        char *space = strchr(p, ' ');
        if (space == NULL)
            break;
        *space = '\0';
        p = space + 1;
    }
    return count;
}

/* A decimal number of ASCII digits, at most max: 1 and *value set, else 0. */
static int parse_number(const char *s, uint64_t max, uint64_t *value)
{
    uint64_t v = 0;
    if (*s == '\0')
        return 0;
    for (; *s != '\0'; s++) {
        if (*s < '0' || *s > '9')
            return 0;
        uint64_t digit = (uint64_t)(*s - '0');
        if (v > (max - digit) / 10)
            return 0;
        v = v * 10 + digit;
    }
    *value = v;
    return 1;
}

static int is_request_id(const char *s)
{
    size_t n = strlen(s);
    if (n == 0 || n > REQUEST_ID_MAX)
        return 0;
    for (; *s != '\0'; s++)
        if (strchr("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789._-", *s) == NULL)
            return 0;
    return 1;
}

static void answer(uint64_t id, const char *body, size_t length)
{
    const char *name = length ? body : NOBODY;
    size_t name_len = length ? length : sizeof NOBODY - 1;
    char head[LINE_MAX_BYTES];
    int n = snprintf(head, sizeof head, "RESULT %" PRIu64 " 200 %zu text/plain; charset=utf-8\n",
                     id, sizeof GREETING - 1 + name_len);
    out_append(head, (size_t)n);
    out_append(GREETING, sizeof GREETING - 1);
    out_append(name, name_len);
}

int main(void)
{
    /* A socket the node closed is a write error to report, not a silent death. */
    signal(SIGPIPE, SIG_IGN);
    out_append("READY\n", 6);

    char line[LINE_MAX_BYTES];
    char *body = NULL;
    size_t body_cap = 0;
    while (read_line(line) != NULL) {
        /* CALL <id> <length> <request-id> <timeout-ms>[ more fields, ignored] */
        char *field[6];
        uint64_t id, length, timeout_ms;
        if (split(line, field, 6) < 5 || strcmp(field[0], "CALL") != 0)
            fail("expected a CALL line, got \"%.32s\"", field[0]);
        if (!parse_number(field[1], INT64_MAX, &id) || id == 0)
            fail("bad call id \"%.32s\"", field[1]);
        if (!parse_number(field[2], BODY_CAP, &length))
            fail("bad body length \"%.32s\" (at most %u bytes)", field[2], BODY_CAP);
        if (!is_request_id(field[3]))
            fail("bad request id \"%.64s\"", field[3]);
        if (!parse_number(field[4], INT64_MAX, &timeout_ms))
            fail("bad timeout \"%.32s\"", field[4]);

        if (length > body_cap) {
            free(body);
            body = malloc(length);
            if (body == NULL)
                fail("out of memory for a %" PRIu64 "-byte body", length);
            body_cap = length;
        }
        size_t got = 0;
        while (got < length) {
            if (in_start == in_end && fill() == 0)
                fail("end of input inside a %" PRIu64 "-byte body", length);
            size_t take = in_end - in_start;
            if (take > length - got)
                take = length - got;
            memcpy(body + got, in + in_start, take);
            in_start += take;
            got += take;
        }
        answer(id, body, length);
    }
    flush_out();
    free(body);
    free(out);
    return 0;
}
