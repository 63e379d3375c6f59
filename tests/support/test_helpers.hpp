#pragma once
// Small doctest-side conveniences shared by the integration tests.
#include <doctest/doctest.h>

#include "ringlb_process.hpp"

// Attaches ringlb's log (read when a check fails, not now) to every failure in the current scope,
// so a failure report always shows what ringlb said.
#define RINGLB_LOG_ON_FAILURE(process) INFO("ringlb log (" #process "):\n", (process).log_text())

// Fails the test unless ringlb logs "ready" in time.
#define REQUIRE_READY(process)                                                     \
    do {                                                                           \
        INFO("ringlb did not log \"ready\"; log:\n", (process).log_text());        \
        REQUIRE((process).wait_ready());                                           \
    } while (0)
