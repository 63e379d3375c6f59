// The splice path's pipes against the real binary and kernel: a worker never holds more than
// max_pipes of them however many sessions move bytes at once (the rest copy), and when the
// kernel shrinks the pipes it makes or refuses to make any, every stream still arrives byte for
// byte on the copy path, the fallback counted by its cause.
#include <arpa/inet.h>
#include <dirent.h>
#include <netinet/in.h>
#include <fcntl.h>
#include <poll.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <optional>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include "admin_client.hpp"
#include "backends.hpp"
#include "config_text.hpp"
#include "prng_stream.hpp"
#include "stream_client.hpp"
#include "test_helpers.hpp"

using namespace ringlb::test;

namespace {

std::string metrics_listen(std::uint16_t metrics_port) {
    return "listen = \"" + loopback_endpoint(metrics_port) + "\"";
}

// A rule with zero_copy = `mode` in front of `backend_endpoint`, and a [metrics] listener.
std::string splice_config(std::uint16_t port, const std::string& backend_endpoint, std::uint16_t metrics_port,
                          const std::string& mode, std::vector<std::string> global_lines) {
    GlobalSpec global;
    global.extra_lines = std::move(global_lines);
    global.trailing_lines = {"[metrics]", metrics_listen(metrics_port)};
    RuleSpec rule = one_server_rule("bulk", port, backend_endpoint);
    rule.extra_lines = {"zero_copy = \"" + mode + "\""};
    return render_config(global, {rule});
}

// The sum of every sample of `family` whose label set contains `labels` ("" = any); nullopt
// when the text has no such sample.
std::optional<double> metric_sum(const std::string& text, std::string_view family, std::string_view labels = "") {
    std::optional<double> sum;
    size_t begin = 0;
    while (begin < text.size()) {
        size_t end = text.find('\n', begin);
        if (end == std::string::npos) end = text.size();
        const std::string_view line(text.data() + begin, end - begin);
        begin = end + 1;
        if (line.empty() || line[0] == '#') continue;
        const size_t name_end = line.find_first_of("{ ");
        if (name_end == std::string_view::npos || line.substr(0, name_end) != family) continue;
        if (!labels.empty() && line.find(labels) == std::string_view::npos) continue;
        sum = sum.value_or(0) + std::stod(std::string(line.substr(line.rfind(' ') + 1)));
    }
    return sum;
}

// The descriptors of process `pid` that are pipe ends; nullopt when /proc could not be read.
std::optional<unsigned> pipe_descriptors_of(pid_t pid) {
    const std::string dir_path = "/proc/" + std::to_string(pid) + "/fd";
    DIR* dir = ::opendir(dir_path.c_str());
    if (!dir) return std::nullopt;
    unsigned pipes = 0;
    char target[256];
    while (const dirent* entry = ::readdir(dir)) {
        if (entry->d_name[0] == '.') continue;
        const ssize_t n = ::readlinkat(::dirfd(dir), entry->d_name, target, sizeof target - 1);
        if (n > 0 && std::string_view(target, static_cast<size_t>(n)).rfind("pipe:", 0) == 0) ++pipes;
    }
    ::closedir(dir);
    return pipes;
}

// The descriptor numbers process `pid` has open.
std::set<int> descriptors_of(pid_t pid) {
    std::set<int> used;
    const std::string dir_path = "/proc/" + std::to_string(pid) + "/fd";
    DIR* dir = ::opendir(dir_path.c_str());
    REQUIRE(dir != nullptr);
    while (const dirent* entry = ::readdir(dir))
        if (entry->d_name[0] != '.') used.insert(std::atoi(entry->d_name));
    ::closedir(dir);
    return used;
}

// The lowest number missing from `used`: with its open file limit set to that, a process gets no
// new descriptor while the ones it holds (numbered above or not) keep working.
int lowest_free_descriptor(const std::set<int>& used) {
    int lowest = 0;
    while (used.count(lowest) > 0) ++lowest;
    return lowest;
}

// Waits until process `pid` holds exactly the descriptors `expected` (a connection to its metrics
// port is closed a moment after the reply).
bool descriptors_return_to(pid_t pid, const std::set<int>& expected) {
    const auto deadline = Clock::now() + 3s;
    while (descriptors_of(pid) != expected) {
        if (Clock::now() > deadline) return false;
        std::this_thread::sleep_for(20ms);
    }
    return true;
}

// Counts ringlb's pipe descriptors every few milliseconds on a thread of its own, until stopped.
class PipeSampler {
public:
    explicit PipeSampler(pid_t pid) : thread_([this, pid] { run(pid); }) {}
    ~PipeSampler() { stop(); }
    void stop() {
        stopping_ = true;
        if (thread_.joinable()) thread_.join();
    }
    unsigned most() const { return most_; }
    unsigned samples() const { return samples_; }
    unsigned unreadable() const { return unreadable_; }

private:
    void run(pid_t pid) {
        while (!stopping_) {
            if (const auto pipes = pipe_descriptors_of(pid)) {
                most_ = std::max(most_.load(), *pipes);
                ++samples_;
            } else {
                ++unreadable_;
            }
            std::this_thread::sleep_for(5ms);
        }
    }

    std::atomic<bool> stopping_{false};
    std::atomic<unsigned> most_{0}, samples_{0}, unreadable_{0};
    std::thread thread_;
};

// A connection to 127.0.0.1:port whose receive buffer is a few KiB: what a client that does not
// read leaves unread backs up into ringlb soon, instead of filling megabytes of socket buffers.
UniqueFd connect_with_small_window(std::uint16_t port) {
    UniqueFd fd(::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0));
    const int size = 4096;
    REQUIRE(::setsockopt(fd.get(), SOL_SOCKET, SO_RCVBUF, &size, sizeof size) == 0);
    sockaddr_in to{};
    to.sin_family = AF_INET;
    to.sin_port = htons(port);
    to.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (::connect(fd.get(), reinterpret_cast<const sockaddr*>(&to), sizeof to) != 0) return {};
    return fd;
}

// Waits until the metrics show no pipe in use on any worker and, when given, `rule_bytes` counted
// (the workers' counters reach a scrape a moment after the bytes); returns the last scrape.
std::string settled_metrics(std::uint16_t metrics_port, std::optional<double> rule_bytes = std::nullopt) {
    std::string text;
    const auto deadline = Clock::now() + 5s;
    do {
        text = http_get(metrics_port, "/metrics");
        if (metric_sum(text, "ringlb_pipes_in_use") == 0.0 &&
            (!rule_bytes || metric_sum(text, "ringlb_rule_bytes_total") == *rule_bytes))
            break;
        std::this_thread::sleep_for(50ms);
    } while (Clock::now() < deadline);
    return text;
}

// Sets /proc/sys/fs/pipe-user-pages-soft for the life of the guard, and puts the old value back
// whatever happens in between.
class PipeUserPagesSoft {
public:
    static constexpr const char* kPath = "/proc/sys/fs/pipe-user-pages-soft";
    explicit PipeUserPagesSoft(unsigned pages) {
        std::ifstream in(kPath);
        if (!(in >> saved_)) return;
        active_ = write(std::to_string(pages));
    }
    ~PipeUserPagesSoft() {
        if (active_) write(saved_);
    }
    PipeUserPagesSoft(const PipeUserPagesSoft&) = delete;
    PipeUserPagesSoft& operator=(const PipeUserPagesSoft&) = delete;
    bool active() const { return active_; }
    const std::string& saved() const { return saved_; }

private:
    static bool write(const std::string& value) {
        std::ofstream out(kPath);
        out << value << '\n';
        out.flush();
        return static_cast<bool>(out);
    }
    std::string saved_;
    bool active_ = false;
};

// A client of an echo backend: sends `total` bytes of its own stream, reads them back and
// checks each byte; once allowed to (`may_end`), half-closes and expects the end of the echo.
struct EchoStream {
    UniqueFd fd;
    PrngStream outbound;
    PrngStream inbound;
    std::uint64_t total;
    std::vector<std::uint8_t> pending;
    size_t pending_offset = 0;
    std::uint64_t received = 0;
    std::optional<std::uint64_t> mismatch;
    bool reading = true, may_end = false, shut = false, eof = false;
    std::string error;

    EchoStream(UniqueFd connected, std::uint64_t seed, std::uint64_t bytes)
        : fd(std::move(connected)), outbound(seed), inbound(seed), total(bytes) {
        set_nonblocking(fd.get());
    }
    bool done() const { return eof || !error.empty(); }
    bool echoed() const { return received == total || !error.empty(); }
    bool all_sent() const { return outbound.position() == total && pending_offset == pending.size(); }
    bool ok() const { return eof && error.empty() && !mismatch && received == total; }

    short events() const {
        return static_cast<short>((reading ? POLLIN : 0) | (shut || (all_sent() && !may_end) ? 0 : POLLOUT));
    }
    void on_ready(short revents) {
        if (revents & POLLIN) read_some();
        if (!shut && (revents & POLLOUT)) write_some();
    }

private:
    void read_some() {
        std::uint8_t buffer[65536];
        const ssize_t n = ::recv(fd.get(), buffer, sizeof buffer, 0);
        if (n > 0) {
            const auto verified = inbound.verify({buffer, static_cast<size_t>(n)});
            if (verified && !mismatch) mismatch = *verified;
            received += static_cast<std::uint64_t>(n);
        } else if (n == 0) {
            eof = true;
        } else if (errno != EAGAIN && errno != EINTR) {
            error = std::string("recv: ") + std::strerror(errno);
        }
    }
    void write_some() {
        while (true) {
            if (pending_offset == pending.size()) {
                const std::uint64_t left = total - outbound.position();
                if (left == 0) {
                    if (!may_end) return;
                    ::shutdown(fd.get(), SHUT_WR);
                    shut = true;
                    return;
                }
                pending.resize(static_cast<size_t>(std::min<std::uint64_t>(left, 65536)));
                pending_offset = 0;
                outbound.fill(pending);
            }
            const ssize_t n = ::send(fd.get(), pending.data() + pending_offset, pending.size() - pending_offset, MSG_NOSIGNAL);
            if (n > 0) {
                pending_offset += static_cast<size_t>(n);
                continue;
            }
            if (n < 0 && (errno == EAGAIN || errno == EINTR)) return;
            error = std::string("send: ") + std::strerror(errno);
            return;
        }
    }
};

// Drives every stream until `finished` holds for each or the deadline passes (then, unless
// `until_finished` is false, a stream not finished by then failed).
void run_echo_streams(std::vector<EchoStream>& streams, bool (EchoStream::*finished)() const,
                      std::chrono::milliseconds timeout, bool until_finished = true) {
    const auto deadline = Clock::now() + timeout;
    std::vector<pollfd> fds;
    std::vector<EchoStream*> active;
    while (Clock::now() < deadline) {
        fds.clear();
        active.clear();
        for (EchoStream& stream : streams) {
            if ((stream.*finished)() || stream.done()) continue;
            fds.push_back({stream.fd.get(), stream.events(), 0});
            active.push_back(&stream);
        }
        if (active.empty()) return;
        if (::poll(fds.data(), fds.size(), std::min(millis_until(deadline), 200)) < 0 && errno != EINTR) return;
        for (size_t i = 0; i < active.size(); ++i)
            if (fds[i].revents) active[i]->on_ready(fds[i].revents);
    }
    if (!until_finished) return;
    for (EchoStream& stream : streams)
        if (!(stream.*finished)() && !stream.done()) stream.error = "timeout after " + std::to_string(stream.received) + " bytes back";
}

// `count` echo streams of `bytes` each way, seeded from `seed`, over the connections `connect()`
// opens.
template <typename Connect>
std::vector<EchoStream> open_echo_streams(unsigned count, std::uint64_t seed, std::uint64_t bytes, Connect connect) {
    std::vector<EchoStream> streams;
    streams.reserve(count);
    for (unsigned i = 0; i < count; ++i) {
        UniqueFd client = connect();
        REQUIRE(client.valid());
        streams.emplace_back(std::move(client), derive_seed(seed, i), bytes);
    }
    return streams;
}

}  // namespace

TEST_SUITE("scale") {
TEST_CASE("splice: 2,000 bulk sessions at once on one worker with max_pipes = 64: at most 64 pipes, the rest copied, every byte exact") {
    constexpr unsigned kSessions = 2000;
    constexpr std::uint64_t kBytesEachWay = 512 * 1024;
    constexpr unsigned kMaxPipes = 64;
    EchoBackend backend;
    const std::uint16_t port = find_free_port(), metrics_port = find_free_port();
    RinglbProcess ringlb(splice_config(port, backend.endpoint(), metrics_port, "splice",
                                       {"max_pipes = " + std::to_string(kMaxPipes)}));
    RINGLB_LOG_ON_FAILURE(ringlb);
    REQUIRE_READY(ringlb);
    const unsigned pipes_at_start = pipe_descriptors_of(ringlb.pid()).value_or(0);

    const auto started = Clock::now();
    PipeSampler sampler(ringlb.pid());
    std::vector<EchoStream> streams =
        open_echo_streams(kSessions, 0xb01c, kBytesEachWay, [port] { return connect_with_small_window(port); });
    // First every client only sends, until none can send more: the echoes back up in ringlb, so
    // each session wants a pipe for as long as its client does not read, far more at once than
    // the pool holds.
    for (EchoStream& stream : streams) stream.reading = false;
    const auto sent = [&streams] {
        std::uint64_t sum = 0;
        for (const EchoStream& stream : streams) sum += stream.outbound.position();
        return sum;
    };
    for (std::uint64_t before = 0; sent() > before && Clock::now() - started < 60s;) {
        before = sent();
        run_echo_streams(streams, &EchoStream::echoed, 500ms, false);
    }
    for (EchoStream& stream : streams) {
        stream.reading = true;
        stream.may_end = true;
    }
    run_echo_streams(streams, &EchoStream::done, 180s);
    const auto elapsed = std::chrono::duration_cast<std::chrono::milliseconds>(Clock::now() - started);
    const std::string metrics = settled_metrics(metrics_port, 2.0 * kSessions * kBytesEachWay);
    sampler.stop();

    unsigned failures = 0;
    for (const EchoStream& stream : streams)
        if (!stream.ok() && ++failures <= 5)
            CHECK_MESSAGE(false, "received ", stream.received, " of ", stream.total, ", error: ", stream.error,
                          ", mismatch: ", stream.mismatch.has_value());
    CHECK(failures == 0);

    INFO(metrics);
    const double pool_empty = metric_sum(metrics, "ringlb_splice_fallbacks_total", "cause=\"pool_empty\"").value_or(-1);
    const double spliced = metric_sum(metrics, "ringlb_spliced_bytes_total").value_or(-1);
    const double all_bytes = metric_sum(metrics, "ringlb_rule_bytes_total").value_or(-1);
    MESSAGE(kSessions, " sessions x ", kBytesEachWay, " bytes echoed in ", elapsed.count(), " ms; ",
            sampler.samples(), " samples of /proc/PID/fd, most pipe descriptors at once ", sampler.most(),
            " (", pipes_at_start, " at start); spliced ", spliced, " of ", all_bytes, " bytes; pool_empty fallbacks ",
            pool_empty);
    CHECK(sampler.samples() > 10);
    CHECK(sampler.unreadable() == 0);
    CHECK(sampler.most() <= 2 * kMaxPipes);
    CHECK(sampler.most() > pipes_at_start);  // the sampler did see the pool at work
    CHECK(pool_empty > 0);
    CHECK(spliced > 0);
    CHECK(all_bytes == 2.0 * kSessions * kBytesEachWay);
    CHECK(metric_sum(metrics, "ringlb_pipes_in_use") == 0.0);
    CHECK(metric_sum(metrics, "ringlb_pipes_free").value_or(-1) <= kMaxPipes);
    streams.clear();
    CHECK_CLEAN_EXIT(ringlb);
}
}  // TEST_SUITE("scale")

TEST_CASE("splice: pipes the kernel makes small (pipe-user-pages-soft) are not used; every stream is copied whole") {
    if (::geteuid() != 0) {
        MESSAGE("SKIP: needs root, to run ringlb as another user and to set fs.pipe-user-pages-soft");
        return;
    }
    constexpr unsigned kSessions = 16;
    constexpr std::uint64_t kBytesEachWay = 512 * 1024;
    StreamCheckBackend backend(kBytesEachWay);
    const std::uint16_t port = find_free_port(), metrics_port = find_free_port();
    // One page: any pipe a user without CAP_SYS_RESOURCE makes is then cut to two pages (8 KiB)
    // and may not be grown. Root is exempt, hence user = nobody.
    PipeUserPagesSoft soft_limit(1);
    if (!soft_limit.active()) {
        MESSAGE("SKIP: ", PipeUserPagesSoft::kPath, " cannot be written here");
        return;
    }
    RinglbProcess ringlb(splice_config(port, backend.endpoint(), metrics_port, "splice", {"user = \"nobody\""}));
    RINGLB_LOG_ON_FAILURE(ringlb);
    REQUIRE(ringlb.wait_for_log("serving as user nobody"));
    REQUIRE_READY(ringlb);

    const auto results = run_stream_clients(port, kSessions, 100, kBytesEachWay, 60s);
    for (const StreamClientResult& result : results) CHECK_MESSAGE(result.ok(kBytesEachWay), result.describe());
    CHECK(backend.wait_finished(kSessions, 10s));
    for (const auto& result : backend.results()) CHECK_MESSAGE(result.ok(kBytesEachWay), result.describe());

    const std::string metrics = settled_metrics(metrics_port);
    INFO(metrics);
    CHECK(metric_sum(metrics, "ringlb_splice_fallbacks_total", "cause=\"shrunk\"").value_or(0) > 0);
    CHECK(metric_sum(metrics, "ringlb_splice_fallbacks_total", "cause=\"resize_failed\"") == 0.0);
    CHECK(metric_sum(metrics, "ringlb_spliced_bytes_total") == 0.0);  // no pipe was good enough
    CHECK(metric_sum(metrics, "ringlb_pipes_in_use") == 0.0);
    CHECK(metric_sum(metrics, "ringlb_pipes_free") == 0.0);  // none kept either
    CHECK_CLEAN_EXIT(ringlb);
}

TEST_CASE("splice: where the kernel refuses splice itself (a seccomp filter's EPERM), every stream is copied whole") {
    constexpr unsigned kSessions = 8;
    // 64 receives of 32 KiB per direction: a direction that kept trying splice would try again
    // every 16 of them.
    constexpr std::uint64_t kBytesEachWay = 2 * 1024 * 1024;
    EchoBackend backend;
    const std::uint16_t port = find_free_port(), metrics_port = find_free_port();
    RinglbOptions options;
    options.environment = {"RINGLB_FAULT=splice-refused"};
    RinglbProcess ringlb(options, splice_config(port, backend.endpoint(), metrics_port, "splice", {}));
    RINGLB_LOG_ON_FAILURE(ringlb);
    REQUIRE_READY(ringlb);

    std::vector<EchoStream> streams =
        open_echo_streams(kSessions, 0x5ecc, kBytesEachWay, [port] { return connect_to(port); });
    for (EchoStream& stream : streams) stream.may_end = true;
    run_echo_streams(streams, &EchoStream::done, 60s);
    for (const EchoStream& stream : streams) {
        INFO("received ", stream.received, " of ", stream.total, ", error: ", stream.error);
        CHECK(stream.ok());
    }
    const std::string metrics = settled_metrics(metrics_port, 2.0 * kSessions * kBytesEachWay);
    INFO(metrics);
    // One refusal ends the tries: only directions that had asked for a splice before it was
    // known still meet it, once each.
    const double unsupported =
        metric_sum(metrics, "ringlb_splice_fallbacks_total", "cause=\"unsupported\"").value_or(-1);
    CHECK(unsupported >= 1);
    CHECK(unsupported <= 2 * kSessions);
    CHECK(metric_sum(metrics, "ringlb_spliced_bytes_total") == 0.0);
    CHECK(metric_sum(metrics, "ringlb_rule_bytes_total") == 2.0 * kSessions * kBytesEachWay);
    // The refused pipe is not kept either.
    CHECK(metric_sum(metrics, "ringlb_pipes_taken_total") == 0.0);
    CHECK(metric_sum(metrics, "ringlb_pipes_in_use") == 0.0);
    CHECK(metric_sum(metrics, "ringlb_pipes_free") == 0.0);
    CHECK(ringlb.log_text().find("RINGLB_FAULT=splice-refused: test fault hooks are active") != std::string::npos);
    // The operator learns it once (one worker), with the kernel's reason.
    const std::string warning = "zero_copy: the kernel refused splice (Operation not permitted;";
    const std::string log = ringlb.log_text();
    CHECK(log.find(warning) != std::string::npos);
    CHECK(log.find(warning) == log.rfind(warning));
    streams.clear();
    CHECK_CLEAN_EXIT(ringlb);
}

TEST_CASE("splice: with no descriptor left for a pipe, sessions already open copy their streams whole") {
    constexpr unsigned kSessions = 8;
    constexpr std::uint64_t kBytesEachWay = 512 * 1024;
    EchoBackend backend;
    const std::uint16_t port = find_free_port(), metrics_port = find_free_port();
    RinglbProcess ringlb(splice_config(port, backend.endpoint(), metrics_port, "splice", {}));
    RINGLB_LOG_ON_FAILURE(ringlb);
    REQUIRE_READY(ringlb);

    // The sessions are opened (both connections) before any byte moves: a waiting direction
    // holds no pipe, so the pool has made none yet.
    std::vector<EchoStream> streams =
        open_echo_streams(kSessions, 0x5eed, kBytesEachWay, [port] { return connect_to(port); });
    const auto deadline = Clock::now() + 5s;
    while (backend.accepted() < kSessions && Clock::now() < deadline) std::this_thread::sleep_for(10ms);
    REQUIRE(backend.accepted() == kSessions);
    std::this_thread::sleep_for(100ms);  // the last connect's completion reaches the worker

    const std::set<int> open_now = descriptors_of(ringlb.pid());
    // Directions waiting for their first bytes have made no pipe.
    const std::string before = http_get(metrics_port, "/metrics");
    CHECK(metric_sum(before, "ringlb_pipes_free") == 0.0);
    CHECK(metric_sum(before, "ringlb_pipes_in_use") == 0.0);

    // Every descriptor number below the limit is taken: pipe2() fails with EMFILE, while the
    // sockets ringlb holds (some numbered above it) keep working.
    REQUIRE(descriptors_return_to(ringlb.pid(), open_now));
    rlimit saved{};
    REQUIRE(::prlimit(ringlb.pid(), RLIMIT_NOFILE, nullptr, &saved) == 0);
    rlimit lowered = saved;
    lowered.rlim_cur = static_cast<rlim_t>(lowest_free_descriptor(open_now));
    REQUIRE(::prlimit(ringlb.pid(), RLIMIT_NOFILE, &lowered, nullptr) == 0);
    // Every stream comes back whole before any session ends: an ended session's descriptors
    // would leave room for pipes.
    run_echo_streams(streams, &EchoStream::echoed, 60s);
    REQUIRE(::prlimit(ringlb.pid(), RLIMIT_NOFILE, &saved, nullptr) == 0);  // for the metrics port
    const std::string metrics = settled_metrics(metrics_port, 2.0 * kSessions * kBytesEachWay);
    for (EchoStream& stream : streams) stream.may_end = true;
    run_echo_streams(streams, &EchoStream::done, 10s);

    for (const EchoStream& stream : streams) {
        INFO("received ", stream.received, " of ", stream.total, ", error: ", stream.error,
             ", first mismatch: ", stream.mismatch.value_or(0), " (", stream.mismatch.has_value(), ")");
        CHECK(stream.ok());
    }
    INFO(metrics);
    CHECK(metric_sum(metrics, "ringlb_splice_fallbacks_total", "cause=\"refused\"").value_or(0) > 0);
    // No pipe could be made: every byte was copied.
    CHECK(metric_sum(metrics, "ringlb_pipes_free") == 0.0);
    CHECK(metric_sum(metrics, "ringlb_spliced_bytes_total") == 0.0);
    CHECK(metric_sum(metrics, "ringlb_rule_bytes_total") == 2.0 * kSessions * kBytesEachWay);
    CHECK(metric_sum(metrics, "ringlb_pipes_in_use") == 0.0);
    streams.clear();
    CHECK_CLEAN_EXIT(ringlb);
}

TEST_CASE("splice: pipes left free give their descriptors to clients: at the data path's descriptor limit none is dropped") {
    constexpr unsigned kBulkSessions = 20;
    constexpr rlim_t kOpenFiles = 200;  // 16 kept back for the control thread: the data path stops at 184
    constexpr int kCeiling = 184;
    EchoBackend backend;
    const std::uint16_t port = find_free_port(), metrics_port = find_free_port();
    RinglbOptions options;
    options.open_files_limit = kOpenFiles;
    // Free pipes stay until descriptors run short: no periodic trim takes them first.
    options.environment = {"RINGLB_FAULT=pipe-trim:600000"};
    RinglbProcess ringlb(options, splice_config(port, backend.endpoint(), metrics_port, "splice", {"max_pipes = 64"}));
    RINGLB_LOG_ON_FAILURE(ringlb);
    REQUIRE_READY(ringlb);
    // The start-up check counts the pipes' descriptors too.
    CHECK(ringlb.log_text().find("is below the 200208 that max_sessions = 100000 needs (2 per session, 2 per pipe "
                                 "of the splice path (64 = max_pipes x workers;") != std::string::npos);

    // Sessions whose clients do not read yet each hold a pipe with the echo their client has not
    // taken (more than a loopback socket's send buffer takes, 4 MiB at most); once the clients
    // have read everything and gone, those pipes wait free in the pool. A byte there and back
    // first: a direction switches to splicing once what it copied is sent.
    std::vector<EchoStream> streams = open_echo_streams(kBulkSessions, 0xfd, 6 * 1024 * 1024, [port] {
        UniqueFd client = connect_with_small_window(port);
        REQUIRE(client.valid());
        REQUIRE(send_all(client.get(), "x", 2s));
        REQUIRE(read_exactly(client.get(), 1, 2s).data == "x");
        return client;
    });
    for (EchoStream& stream : streams) stream.reading = false;
    run_echo_streams(streams, &EchoStream::all_sent, 10s);
    const auto pipes_held_by = Clock::now() + 5s;
    while (metric_sum(http_get(metrics_port, "/metrics"), "ringlb_pipes_in_use").value_or(0) < kBulkSessions &&
           Clock::now() < pipes_held_by)
        std::this_thread::sleep_for(20ms);
    for (EchoStream& stream : streams) stream.reading = stream.may_end = true;
    run_echo_streams(streams, &EchoStream::done, 30s);
    for (const EchoStream& stream : streams) CHECK(stream.ok());
    streams.clear();
    const std::string before = settled_metrics(metrics_port);
    const double free_pipes = metric_sum(before, "ringlb_pipes_free").value_or(0);
    INFO(before);
    REQUIRE(free_pipes >= kBulkSessions);  // otherwise this test would show nothing

    // Clients up to the data path's limit, counting the free pipes' descriptors as free: unless
    // the pipes give theirs up, the last of them are dropped for want of descriptors. The clients
    // send nothing yet, so no pipe is in use meanwhile.
    const auto pipe_descriptors = pipe_descriptors_of(ringlb.pid());
    REQUIRE(pipe_descriptors.has_value());
    const int others = static_cast<int>(descriptors_of(ringlb.pid()).size()) - static_cast<int>(*pipe_descriptors);
    const unsigned clients = static_cast<unsigned>((kCeiling - others) / 2 - 2);
    INFO("pipe descriptors: ", *pipe_descriptors, ", others: ", others, ", clients: ", clients);
    REQUIRE(2 * clients + static_cast<unsigned>(others) + *pipe_descriptors > static_cast<unsigned>(kCeiling));
    std::vector<UniqueFd> held;
    for (unsigned i = 0; i < clients; ++i) {
        held.push_back(connect_to(port));
        REQUIRE(held.back().valid());
    }
    const auto connected_by = Clock::now() + 5s;
    while (backend.accepted() < kBulkSessions + clients && Clock::now() < connected_by)
        std::this_thread::sleep_for(10ms);
    CHECK(backend.accepted() == kBulkSessions + clients);
    CHECK(ringlb.log_text().find("out of file descriptors") == std::string::npos);
    // Every one of them is served, one after the other: by splice while a pipe can be made, by
    // copying when none can.
    unsigned served = 0;
    for (UniqueFd& client : held) {
        if (send_all(client.get(), "ping\n", 2s) && read_exactly(client.get(), 5, 2s).data == "ping\n") ++served;
    }
    CHECK(served == clients);

    held.clear();
    CHECK_CLEAN_EXIT(ringlb);
}

TEST_CASE("splice: pipes that no splice needed for a while are closed, their descriptors given back") {
    EchoBackend backend;
    const std::uint16_t port = find_free_port(), metrics_port = find_free_port();
    RinglbProcess ringlb(splice_config(port, backend.endpoint(), metrics_port, "splice", {}));
    RINGLB_LOG_ON_FAILURE(ringlb);
    REQUIRE_READY(ringlb);
    std::vector<EchoStream> streams = open_echo_streams(8, 0x7e, 1024 * 1024, [port] { return connect_to(port); });
    for (EchoStream& stream : streams) stream.may_end = true;
    run_echo_streams(streams, &EchoStream::done, 30s);
    for (const EchoStream& stream : streams) CHECK(stream.ok());
    const std::string after = settled_metrics(metrics_port);
    REQUIRE(metric_sum(after, "ringlb_pipes_taken_total").value_or(0) > 0);

    // Trimmed every 2 s, a pipe free for a whole interval is closed: within 4 s of the last use.
    const auto deadline = Clock::now() + 8s;
    while (pipe_descriptors_of(ringlb.pid()).value_or(1) != 0 && Clock::now() < deadline)
        std::this_thread::sleep_for(100ms);
    CHECK(pipe_descriptors_of(ringlb.pid()) == 0u);
    CHECK(metric_sum(http_get(metrics_port, "/metrics"), "ringlb_pipes_free") == 0.0);
    streams.clear();
    CHECK_CLEAN_EXIT(ringlb);
}
