#include "ringlb/dns/resolver.hpp"

#include <ares.h>
#include <poll.h>
#include <sys/eventfd.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <climits>
#include <cstring>
#include <map>
#include <mutex>
#include <optional>
#include <stdexcept>
#include <string>
#include <thread>

#include "ringlb/net/socket.hpp"

namespace ringlb::dns {

namespace {

using Clock = std::chrono::steady_clock;
using std::chrono::milliseconds;

// One query waits this long for a server's answer and is tried this many times (over the
// configured servers in turn) before it counts as failed.
constexpr milliseconds kQueryTimeout{2000};
constexpr int kQueryTries = 2;
// With no name to resolve the loop still looks at its wake-up descriptor this often.
constexpr milliseconds kIdleWait{60'000};

// c-ares' process-wide initialisation, counted by c-ares itself.
class AresLibrary {
public:
    AresLibrary() {
        if (const int status = ares_library_init(ARES_LIB_INIT_ALL); status != ARES_SUCCESS)
            throw std::runtime_error(std::string("dns: cannot initialise c-ares: ") + ares_strerror(status));
    }
    ~AresLibrary() { ares_library_cleanup(); }
    AresLibrary(const AresLibrary&) = delete;
    AresLibrary& operator=(const AresLibrary&) = delete;
};

std::string joined(const std::vector<net::SocketAddress>& addresses, char separator) {
    std::string out;
    for (const net::SocketAddress& address : addresses) {
        if (!out.empty()) out += separator;
        out += address.to_string();
    }
    return out;
}

std::string servers_csv(const std::vector<net::SocketAddress>& servers) { return joined(servers, ','); }

// One c-ares channel: its sockets, its queries and the servers it asks.
class Channel {
public:
    explicit Channel(const std::vector<net::SocketAddress>& servers) {
        ares_options options{};
        int mask = ARES_OPT_TIMEOUTMS | ARES_OPT_TRIES;
        options.timeout = static_cast<int>(kQueryTimeout.count());
        options.tries = kQueryTries;
        // With resolvers named in the config, ask them only: /etc/hosts would otherwise answer first.
        char dns_only[] = "b";
        if (!servers.empty()) {
            options.lookups = dns_only;
            mask |= ARES_OPT_LOOKUPS;
        }
        if (const int status = ares_init_options(&channel_, &options, mask); status != ARES_SUCCESS)
            throw std::runtime_error(std::string("dns: cannot set up a c-ares channel: ") + ares_strerror(status));
        if (servers.empty()) return;
        const std::string csv = servers_csv(servers);
        if (const int status = ares_set_servers_ports_csv(channel_, csv.c_str()); status != ARES_SUCCESS) {
            ares_destroy(channel_);
            throw std::runtime_error("dns: cannot use resolvers " + csv + ": " + ares_strerror(status));
        }
    }
    // Ends every query in flight: their callbacks run now with ARES_EDESTRUCTION.
    ~Channel() { ares_destroy(channel_); }
    Channel(const Channel&) = delete;
    Channel& operator=(const Channel&) = delete;

    ares_channel get() const { return channel_; }

private:
    ares_channel channel_ = nullptr;
};

net::UniqueFd make_wake_fd() {
    net::UniqueFd fd(::eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC));
    if (!fd) throw std::runtime_error(std::string("dns: cannot create the resolver's eventfd: ") + std::strerror(errno));
    return fd;
}

// What one resolution gave: the addresses with `port`, and the shortest TTL among the records.
struct Answer {
    int status = ARES_SUCCESS;
    std::vector<net::SocketAddress> addresses;
    std::chrono::seconds ttl{INT_MAX};
};

std::optional<net::SocketAddress> address_with_port(const ares_addrinfo_node& node, uint16_t port) {
    sockaddr_storage storage{};
    if (node.ai_addr == nullptr || node.ai_addrlen > sizeof storage) return std::nullopt;
    std::memcpy(&storage, node.ai_addr, node.ai_addrlen);
    if (node.ai_family == AF_INET) reinterpret_cast<sockaddr_in*>(&storage)->sin_port = htons(port);
    else if (node.ai_family == AF_INET6) reinterpret_cast<sockaddr_in6*>(&storage)->sin6_port = htons(port);
    else return std::nullopt;
    return net::SocketAddress::from_sockaddr(reinterpret_cast<const sockaddr*>(&storage), node.ai_addrlen);
}

Answer read_answer(int status, const ares_addrinfo* result, uint16_t port) {
    Answer answer;
    answer.status = status;
    if (status != ARES_SUCCESS || result == nullptr) return answer;
    int ttl = INT_MAX;
    // A CNAME on the way expires like the records it leads to.
    for (const ares_addrinfo_cname* cname = result->cnames; cname != nullptr; cname = cname->next)
        ttl = std::min(ttl, cname->ttl);
    for (const ares_addrinfo_node* node = result->nodes; node != nullptr; node = node->ai_next) {
        const auto address = address_with_port(*node, port);
        if (!address) continue;
        answer.addresses.push_back(*address);
        ttl = std::min(ttl, node->ai_ttl);
    }
    answer.ttl = std::chrono::seconds(std::max(ttl, 0));
    canonicalize(answer.addresses);
    return answer;
}

std::string error_text(const Answer& answer) {
    if (answer.status != ARES_SUCCESS) return ares_strerror(answer.status);
    return "no A or AAAA records";
}

std::string duration_text(milliseconds duration) {
    const auto ms = duration.count();
    return ms % 1000 == 0 ? std::to_string(ms / 1000) + "s" : std::to_string(ms) + "ms";
}

std::string join(const std::vector<net::SocketAddress>& addresses) { return joined(addresses, ' '); }

}  // namespace

class Resolver::Loop {
public:
    Loop(Logger& log, Options options)
        : log_(log), options_(std::move(options)), channel_(options_.servers), wake_fd_(make_wake_fd()) {
        thread_ = std::thread([this] { run(); });
    }

    ~Loop() {
        stopping_ = true;
        wake();
        thread_.join();
    }

    void set_targets(std::vector<Target> targets) {
        {
            std::lock_guard lock(mutex_);
            pending_targets_ = std::move(targets);
        }
        wake();
    }

    std::vector<Update> take_updates() {
        std::lock_guard lock(mutex_);
        std::vector<Update> updates;
        for (auto& [endpoint, addresses] : updates_) updates.push_back({endpoint, std::move(addresses)});
        updates_.clear();
        return updates;
    }

private:
    // One name's state, on the resolver thread only.
    struct Schedule {
        milliseconds interval{0};
        Clock::time_point due;    // when to ask next (while no query is in flight)
        uint64_t query = 0;       // id of the query in flight; 0 = none
        std::vector<net::SocketAddress> addresses;  // the last good set; empty = none yet
        bool failing = false;     // in a streak of failures (logged once at its start)
    };
    // Handed to c-ares with each query and deleted by its callback.
    struct Query {
        Loop* loop = nullptr;
        Endpoint endpoint;
        uint64_t id = 0;
    };

    void run() {
        try {
            while (!stopping_) {
                adopt_targets();
                start_due_queries(Clock::now());
                wait_and_process();
            }
        } catch (const std::exception& e) {
            log_.error("dns: the resolver thread stopped, names are no longer re-resolved: ", e.what());
        }
    }

    void wake() {
        const uint64_t one = 1;
        // A full counter (EAGAIN) already means "wake up", so the result does not matter.
        [[maybe_unused]] const ssize_t written = ::write(wake_fd_.get(), &one, sizeof one);
    }

    void adopt_targets() {
        std::optional<std::vector<Target>> targets;
        {
            std::lock_guard lock(mutex_);
            targets.swap(pending_targets_);
        }
        if (!targets) return;
        std::map<Endpoint, Schedule> next;
        for (const Target& target : *targets) {
            const auto known = schedules_.find(target.endpoint);
            Schedule schedule = known != schedules_.end() ? std::move(known->second) : Schedule{};
            if (known == schedules_.end()) schedule.due = Clock::now();  // a new name: resolve it at once
            schedule.interval = std::max(target.interval, options_.min_interval);
            next.emplace(target.endpoint, std::move(schedule));
        }
        // Queries for dropped names may still answer: their ids match no schedule, so they are ignored.
        schedules_ = std::move(next);
    }

    void start_due_queries(Clock::time_point now) {
        for (auto& [endpoint, schedule] : schedules_)
            if (schedule.query == 0 && schedule.due <= now) start_query(endpoint, schedule);
    }

    void start_query(const Endpoint& endpoint, Schedule& schedule) {
        schedule.query = next_query_id_++;
        auto query = std::make_unique<Query>(Query{this, endpoint, schedule.query});
        ares_addrinfo_hints hints{};
        hints.ai_family = AF_UNSPEC;       // A and AAAA
        hints.ai_flags = ARES_AI_NOSORT;   // the set is sorted by address anyway
        // c-ares owns the query from here and gives it back in on_answer (maybe before returning).
        ares_getaddrinfo(channel_.get(), endpoint.name.c_str(), nullptr, &hints, &Loop::on_answer, query.release());
    }

    static void on_answer(void* arg, int status, int /*timeouts*/, ares_addrinfo* result) {
        const std::unique_ptr<Query> query(static_cast<Query*>(arg));
        const std::unique_ptr<ares_addrinfo, void (*)(ares_addrinfo*)> owned(result, &ares_freeaddrinfo);
        // On destruction the Loop is being torn down: touch nothing of it.
        if (status == ARES_EDESTRUCTION) return;
        query->loop->record(*query, read_answer(status, result, query->endpoint.port));
    }

    void record(const Query& query, const Answer& answer) {
        const auto found = schedules_.find(query.endpoint);
        if (found == schedules_.end() || found->second.query != query.id) return;  // name dropped meanwhile
        Schedule& schedule = found->second;
        schedule.query = 0;
        if (answer.status == ARES_SUCCESS && !answer.addresses.empty()) record_success(query.endpoint, schedule, answer);
        else record_failure(query.endpoint, schedule, answer);
    }

    void record_success(const Endpoint& endpoint, Schedule& schedule, const Answer& answer) {
        if (schedule.failing) log_.info("dns: ", endpoint.to_string(), " resolves again");
        schedule.failing = false;
        const auto ttl = std::chrono::duration_cast<milliseconds>(answer.ttl);
        schedule.due = Clock::now() + std::max(std::min(schedule.interval, ttl), options_.min_interval);
        if (answer.addresses == schedule.addresses) return;
        schedule.addresses = answer.addresses;
        publish(endpoint, answer.addresses);
    }

    // The last good set stays in use: a DNS outage must not take every server of a rule away.
    void record_failure(const Endpoint& endpoint, Schedule& schedule, const Answer& answer) {
        if (!schedule.failing) {
            const std::string kept = schedule.addresses.empty()
                                         ? "no addresses yet"
                                         : "keeping the last " + std::to_string(schedule.addresses.size()) +
                                               " address(es): " + join(schedule.addresses);
            log_.warn("dns: cannot resolve ", endpoint.to_string(), ": ", error_text(answer), " (", kept,
                      "; trying again every ", duration_text(schedule.interval), ")");
        }
        schedule.failing = true;
        schedule.due = Clock::now() + schedule.interval;
    }

    void publish(const Endpoint& endpoint, const std::vector<net::SocketAddress>& addresses) {
        {
            std::lock_guard lock(mutex_);
            updates_[endpoint] = addresses;
        }
        if (options_.wake) options_.wake();
    }

    // Until the next name is due, c-ares needs attention, or set_targets()/the destructor wakes us.
    int poll_timeout_ms() {
        auto wait = kIdleWait;
        const auto now = Clock::now();
        for (const auto& [endpoint, schedule] : schedules_)
            if (schedule.query == 0)
                wait = std::min(wait, std::chrono::duration_cast<milliseconds>(std::max(schedule.due - now, Clock::duration(0))));
        timeval longest{static_cast<time_t>(wait.count() / 1000), static_cast<suseconds_t>(wait.count() % 1000 * 1000)};
        timeval shorter{};
        const timeval* chosen = ares_timeout(channel_.get(), &longest, &shorter);
        return static_cast<int>(chosen->tv_sec * 1000 + (chosen->tv_usec + 999) / 1000);
    }

    void wait_and_process() {
        ares_socket_t sockets[ARES_GETSOCK_MAXNUM];
        const int bits = ares_getsock(channel_.get(), sockets, ARES_GETSOCK_MAXNUM);
        std::vector<pollfd> fds{{wake_fd_.get(), POLLIN, 0}};
        for (int i = 0; i < ARES_GETSOCK_MAXNUM; ++i) {
            const short events = static_cast<short>((ARES_GETSOCK_READABLE(bits, i) ? POLLIN : 0) |
                                                    (ARES_GETSOCK_WRITABLE(bits, i) ? POLLOUT : 0));
            if (events != 0) fds.push_back({sockets[i], events, 0});
        }
        if (::poll(fds.data(), fds.size(), poll_timeout_ms()) < 0 && errno != EINTR)
            throw std::runtime_error(std::string("poll: ") + std::strerror(errno));
        if (fds[0].revents != 0) {
            uint64_t count = 0;
            [[maybe_unused]] const ssize_t n = ::read(wake_fd_.get(), &count, sizeof count);
        }
        for (size_t i = 1; i < fds.size(); ++i) {
            const bool readable = (fds[i].revents & (POLLIN | POLLERR | POLLHUP)) != 0;
            const bool writable = (fds[i].revents & POLLOUT) != 0;
            if (readable || writable)
                ares_process_fd(channel_.get(), readable ? fds[i].fd : ARES_SOCKET_BAD,
                                writable ? fds[i].fd : ARES_SOCKET_BAD);
        }
        ares_process_fd(channel_.get(), ARES_SOCKET_BAD, ARES_SOCKET_BAD);  // queries that timed out
    }

    Logger& log_;
    Options options_;
    AresLibrary library_;  // before the channel, which needs it
    Channel channel_;
    net::UniqueFd wake_fd_;
    std::map<Endpoint, Schedule> schedules_;  // resolver thread only
    uint64_t next_query_id_ = 1;
    std::atomic<bool> stopping_{false};

    std::mutex mutex_;  // guards pending_targets_ and updates_, shared with the owner's thread
    std::optional<std::vector<Target>> pending_targets_;
    std::map<Endpoint, std::vector<net::SocketAddress>> updates_;

    std::thread thread_;  // started last, joined first (in ~Loop)
};

Resolver::Resolver(Logger& log, Options options) : loop_(std::make_unique<Loop>(log, std::move(options))) {}

Resolver::~Resolver() = default;

void Resolver::set_targets(std::vector<Target> targets) { loop_->set_targets(std::move(targets)); }

std::vector<Update> Resolver::take_updates() { return loop_->take_updates(); }

}  // namespace ringlb::dns
