"""TEST ONLY: start a node process whose wall clock is off by a fixed offset.

A run's epoch is kinship's: the Unix ms of the process's wall clock when gossip starts, read
in kinship's native code, with no setting to choose it. So to get a node whose epoch lies in
the past (or future), as a host with a skewed clock would have, the whole process's wall
clock is shifted: a small ``LD_PRELOAD`` library, built here with the system's C compiler,
adds ``TIERFAAS_TEST_CLOCK_OFFSET_MS`` to ``CLOCK_REALTIME`` (``clock_gettime``,
``gettimeofday``, ``time``). Monotonic clocks are untouched, so timeouts behave as on any
host. Never use this outside tests.

    env = clock_shift_env(-5 * 60_000, tmp_path)   # five minutes behind
    node = cluster.add_node(env=env)
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

OFFSET_ENV = "TIERFAAS_TEST_CLOCK_OFFSET_MS"

_SOURCE = r"""
#define _GNU_SOURCE
#include <dlfcn.h>
#include <stdlib.h>
#include <sys/time.h>
#include <time.h>

static long long offset_ns;
static int (*real_clock_gettime)(clockid_t, struct timespec *);

__attribute__((constructor)) static void load(void) {
    const char *text = getenv("TIERFAAS_TEST_CLOCK_OFFSET_MS");
    offset_ns = text ? atoll(text) * 1000000LL : 0;
    real_clock_gettime = (int (*)(clockid_t, struct timespec *))dlsym(RTLD_NEXT, "clock_gettime");
}

int clock_gettime(clockid_t clock, struct timespec *ts) {
    if (!real_clock_gettime) load();
    int rc = real_clock_gettime(clock, ts);
    if (rc == 0 && (clock == CLOCK_REALTIME || clock == CLOCK_REALTIME_COARSE)) {
        long long ns = (long long)ts->tv_sec * 1000000000LL + ts->tv_nsec + offset_ns;
        ts->tv_sec = ns / 1000000000LL;
        ts->tv_nsec = ns % 1000000000LL;
        if (ts->tv_nsec < 0) {
            ts->tv_nsec += 1000000000LL;
            ts->tv_sec -= 1;
        }
    }
    return rc;
}

int gettimeofday(struct timeval *tv, void *tz) {
    struct timespec ts;
    (void)tz;
    if (clock_gettime(CLOCK_REALTIME, &ts) != 0) return -1;
    if (tv) {
        tv->tv_sec = ts.tv_sec;
        tv->tv_usec = ts.tv_nsec / 1000;
    }
    return 0;
}

time_t time(time_t *out) {
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    if (out) *out = ts.tv_sec;
    return ts.tv_sec;
}
"""


class NoCompiler(RuntimeError):
    """No C compiler to build the clock-shifting library with (tests skip on it)."""


def build_library(directory: Path) -> Path:
    """Builds the ``LD_PRELOAD`` library in ``directory``; returns its path. Raises
    ``NoCompiler`` without a C compiler, ``CalledProcessError`` if it does not build."""
    compiler = shutil.which("cc") or shutil.which("gcc") or shutil.which("clang")
    if compiler is None:
        raise NoCompiler("no C compiler (cc, gcc or clang) on PATH")
    directory.mkdir(parents=True, exist_ok=True)
    source = directory / "clockshift.c"
    library = directory / "libclockshift.so"
    source.write_text(_SOURCE)
    subprocess.run(
        [compiler, "-shared", "-fPIC", "-O2", "-o", str(library), str(source), "-ldl"],
        check=True,
        capture_output=True,
        timeout=60,
    )
    return library


def clock_shift_env(offset_ms: int, directory: Path) -> dict[str, str]:
    """The environment for a process whose wall clock reads ``offset_ms`` off (negative:
    behind), building the library in ``directory``."""
    library = build_library(directory)
    return {"LD_PRELOAD": str(library), OFFSET_ENV: str(offset_ms)}
