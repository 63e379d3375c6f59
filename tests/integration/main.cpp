// Entry point of the integration suite. The engine under test comes from RINGLB_TEST_ENGINE; when
// it is io_uring and the kernel (or a seccomp policy) refuses io_uring, the whole suite is skipped
// with exit code 77 instead of failing.
#define DOCTEST_CONFIG_IMPLEMENT
#include <doctest/doctest.h>
#include <linux/io_uring.h>
#include <sys/resource.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <cerrno>
#include <csignal>
#include <cstdio>
#include <cstring>

#include "ringlb_process.hpp"

namespace {

constexpr int kSkipExitCode = 77;

// 0 when an io_uring instance can be created here, else the errno of the failure.
int probe_io_uring() {
    io_uring_params params;
    std::memset(&params, 0, sizeof params);
    long fd = ::syscall(__NR_io_uring_setup, 4, &params);
    if (fd < 0) return errno;
    ::close(static_cast<int>(fd));
    return 0;
}

// The concurrency test holds thousands of sockets (and ringlb inherits the limit).
void raise_fd_limit() {
    rlimit limit{};
    if (::getrlimit(RLIMIT_NOFILE, &limit) != 0) return;
    limit.rlim_cur = limit.rlim_max;
    ::setrlimit(RLIMIT_NOFILE, &limit);
}

}  // namespace

int main(int argc, char** argv) {
    const std::string engine = ringlb::test::test_engine();
    std::printf("integration tests, engine=%s\n", engine.c_str());
    std::printf("ringlb binary: %s\n", ringlb::test::ringlb_binary().c_str());
    std::fflush(stdout);

    if (engine == "uring") {
        if (int error = probe_io_uring(); error != 0) {
            std::printf("SKIP: io_uring unavailable: %s\n", std::strerror(error));
            return kSkipExitCode;
        }
    }
    // A peer that resets must show up as an error from send(), not kill the test process.
    std::signal(SIGPIPE, SIG_IGN);
    raise_fd_limit();

    doctest::Context context(argc, argv);
    return context.run();
}
