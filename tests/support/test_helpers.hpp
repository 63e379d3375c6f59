#pragma once
// Small doctest-side conveniences shared by the integration tests.
#include <doctest/doctest.h>

#include "ringlb_process.hpp"

// Attaches ringlb's log (read when a check fails, not now) to every failure in the current scope,
// so a failure report always shows what ringlb said.
#define RINGLB_LOG_ON_FAILURE(process) INFO("ringlb log (" #process "):\n", (process).log_text())

// Fails the test unless ringlb logs "ready" in time (use with RINGLB_LOG_ON_FAILURE, which shows
// the log explaining why).
#define REQUIRE_READY(process)                                                     \
    do {                                                                           \
        INFO("ringlb did not log \"ready\" in time");                              \
        REQUIRE((process).wait_ready());                                           \
    } while (0)

// Stops ringlb with SIGTERM and checks it exits with code 0. Ending tests this way (rather than
// leaving the destructor's SIGKILL to it) also surfaces leak reports of sanitizer builds.
#define CHECK_CLEAN_EXIT(process)                                                  \
    do {                                                                           \
        ::ringlb::test::ExitStatus clean_exit_status = (process).stop();           \
        INFO("ringlb ended with ", clean_exit_status.describe());                  \
        CHECK(clean_exit_status.exited);                                           \
        CHECK(clean_exit_status.code == 0);                                        \
    } while (0)
