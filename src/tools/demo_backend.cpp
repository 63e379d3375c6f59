// ringlb-demo-backend: a tiny HTTP/1.0 server for demos and manual tests of ringlb.
//
//   ringlb-demo-backend --listen 127.0.0.1:9001 --name a
//
// Every connection is answered with "backend <name>\n" once the request head has arrived (a blank
// line), 4 KiB have arrived, or the client shut down writing; then the connection is closed. One
// thread, one poll() loop, any number of connections. SIGTERM/SIGINT end it with exit code 0.
#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <sys/socket.h>
#include <unistd.h>

#include <CLI/CLI.hpp>
#include <cerrno>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <memory>
#include <optional>
#include <string>
#include <vector>

namespace {

using Clock = std::chrono::steady_clock;

constexpr std::size_t kRequestLimit = 4096;
// After answering, unread input is drained for at most this long before closing: closing with
// unread bytes would send a reset that can destroy the response before the client reads it.
constexpr auto kDrainTime = std::chrono::seconds(2);

// Self-pipe: the signal handler writes a byte so poll() wakes up at once.
int g_wake_pipe[2] = {-1, -1};
volatile sig_atomic_t g_stop = 0;

void on_stop_signal(int) {
    g_stop = 1;
    char byte = 1;
    ssize_t ignored = ::write(g_wake_pipe[1], &byte, 1);
    (void)ignored;
}

struct Endpoint {
    sockaddr_storage storage{};
    socklen_t length = 0;
};

// "1.2.3.4:80" or "[::1]:80".
std::optional<Endpoint> parse_endpoint(const std::string& text) {
    std::string host, port;
    if (!text.empty() && text.front() == '[') {
        auto close = text.find(']');
        if (close == std::string::npos || close + 1 >= text.size() || text[close + 1] != ':') return std::nullopt;
        host = text.substr(1, close - 1);
        port = text.substr(close + 2);
    } else {
        auto colon = text.rfind(':');
        if (colon == std::string::npos) return std::nullopt;
        host = text.substr(0, colon);
        port = text.substr(colon + 1);
    }
    if (port.empty() || port.size() > 5 || port.find_first_not_of("0123456789") != std::string::npos) return std::nullopt;
    unsigned long number = std::stoul(port);
    if (number > 65535) return std::nullopt;

    Endpoint endpoint;
    auto* v4 = reinterpret_cast<sockaddr_in*>(&endpoint.storage);
    auto* v6 = reinterpret_cast<sockaddr_in6*>(&endpoint.storage);
    if (::inet_pton(AF_INET, host.c_str(), &v4->sin_addr) == 1) {
        v4->sin_family = AF_INET;
        v4->sin_port = htons(static_cast<uint16_t>(number));
        endpoint.length = sizeof(sockaddr_in);
    } else if (::inet_pton(AF_INET6, host.c_str(), &v6->sin6_addr) == 1) {
        v6->sin6_family = AF_INET6;
        v6->sin6_port = htons(static_cast<uint16_t>(number));
        endpoint.length = sizeof(sockaddr_in6);
    } else {
        return std::nullopt;
    }
    return endpoint;
}

int open_listener(const Endpoint& endpoint) {
    int fd = ::socket(endpoint.storage.ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0) return -1;
    int one = 1;
    ::setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    if (::bind(fd, reinterpret_cast<const sockaddr*>(&endpoint.storage), endpoint.length) != 0 ||
        ::listen(fd, SOMAXCONN) != 0) {
        int saved = errno;
        ::close(fd);
        errno = saved;
        return -1;
    }
    return fd;
}

std::string http_response(const std::string& name) {
    std::string body = "backend " + name + "\n";
    return "HTTP/1.0 200 OK\r\nContent-Type: text/plain\r\nContent-Length: " + std::to_string(body.size()) +
           "\r\nConnection: close\r\n\r\n" + body;
}

class Connection {
public:
    Connection(int fd, const std::string& response) : fd_(fd), response_(response) {}
    Connection(const Connection&) = delete;
    Connection& operator=(const Connection&) = delete;
    ~Connection() {
        if (fd_ >= 0) ::close(fd_);
    }

    int fd() const { return fd_; }
    bool finished() const { return state_ == State::Done; }
    short events() const { return state_ == State::Answering ? POLLOUT : POLLIN; }

    void handle(short revents) {
        if (state_ == State::Reading && (revents & (POLLIN | POLLHUP | POLLERR))) read_request();
        if (state_ == State::Answering) write_response();
        if (state_ == State::Draining && (revents & (POLLIN | POLLHUP | POLLERR))) drain();
        if (state_ == State::Draining && Clock::now() >= drain_until_) state_ = State::Done;
    }

private:
    enum class State { Reading, Answering, Draining, Done };

    void read_request() {
        char buffer[4096];
        for (;;) {
            ssize_t n = ::recv(fd_, buffer, sizeof buffer, 0);
            if (n > 0) {
                seen_.append(buffer, static_cast<std::size_t>(n));
                if (seen_.find("\r\n\r\n") != std::string::npos || seen_.size() >= kRequestLimit) break;
                continue;
            }
            if (n < 0 && errno == EINTR) continue;
            if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) return;
            if (n < 0) {
                state_ = State::Done;  // reset by the client: nobody to answer
                return;
            }
            break;  // EOF: answer what we have
        }
        seen_.clear();
        state_ = State::Answering;
    }

    void write_response() {
        while (sent_ < response_.size()) {
            ssize_t n = ::send(fd_, response_.data() + sent_, response_.size() - sent_, MSG_NOSIGNAL);
            if (n > 0) {
                sent_ += static_cast<std::size_t>(n);
                continue;
            }
            if (n < 0 && errno == EINTR) continue;
            if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) return;
            state_ = State::Done;
            return;
        }
        ::shutdown(fd_, SHUT_WR);
        state_ = State::Draining;
        drain_until_ = Clock::now() + kDrainTime;
    }

    void drain() {
        char buffer[4096];
        for (;;) {
            ssize_t n = ::recv(fd_, buffer, sizeof buffer, 0);
            if (n > 0) continue;
            if (n < 0 && errno == EINTR) continue;
            if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) return;
            state_ = State::Done;  // EOF or error
            return;
        }
    }

    int fd_ = -1;
    const std::string& response_;
    std::string seen_;
    State state_ = State::Reading;
    std::size_t sent_ = 0;
    Clock::time_point drain_until_{};
};

void accept_all(int listener, const std::string& response, std::vector<std::unique_ptr<Connection>>& connections) {
    for (;;) {
        int fd = ::accept4(listener, nullptr, nullptr, SOCK_NONBLOCK | SOCK_CLOEXEC);
        if (fd < 0) return;  // EAGAIN, or a transient error such as EMFILE: poll reports again
        connections.push_back(std::make_unique<Connection>(fd, response));
    }
}

bool install_signal_handlers() {
    if (::pipe2(g_wake_pipe, O_NONBLOCK | O_CLOEXEC) != 0) return false;
    struct sigaction action {};
    action.sa_handler = on_stop_signal;
    sigemptyset(&action.sa_mask);
    action.sa_flags = 0;  // no SA_RESTART: poll() should return EINTR
    ::sigaction(SIGTERM, &action, nullptr);
    ::sigaction(SIGINT, &action, nullptr);
    ::signal(SIGPIPE, SIG_IGN);
    return true;
}

int serve(int listener, const std::string& name) {
    const std::string response = http_response(name);
    std::vector<std::unique_ptr<Connection>> connections;
    std::vector<pollfd> fds;
    while (!g_stop) {
        fds.clear();
        fds.push_back({g_wake_pipe[0], POLLIN, 0});
        fds.push_back({listener, POLLIN, 0});
        for (const auto& c : connections) fds.push_back({c->fd(), c->events(), 0});
        // The timeout only matters for connections lingering in the drain state.
        if (::poll(fds.data(), fds.size(), 500) < 0 && errno != EINTR) {
            std::perror("poll");
            return 1;
        }
        if (g_stop) break;
        for (std::size_t i = 0; i < connections.size(); ++i) connections[i]->handle(fds[i + 2].revents);
        std::erase_if(connections, [](const auto& c) { return c->finished(); });
        if (fds[1].revents & POLLIN) accept_all(listener, response, connections);
    }
    return 0;
}

int run(int argc, char** argv) {
    CLI::App app{"ringlb-demo-backend: answers every HTTP request with \"backend <name>\""};
    std::string listen_text;
    std::string name;
    app.add_option("--listen", listen_text, "address to listen on, e.g. 127.0.0.1:9001 or [::1]:9001")->required();
    app.add_option("--name", name, "name put in every response")->required();
    CLI11_PARSE(app, argc, argv);

    auto endpoint = parse_endpoint(listen_text);
    if (!endpoint) {
        std::fprintf(stderr, "ringlb-demo-backend: bad --listen address '%s'\n", listen_text.c_str());
        return 2;
    }
    if (!install_signal_handlers()) {
        std::perror("pipe2");
        return 1;
    }
    int listener = open_listener(*endpoint);
    if (listener < 0) {
        std::fprintf(stderr, "ringlb-demo-backend: cannot listen on %s: %s\n", listen_text.c_str(), std::strerror(errno));
        return 2;
    }
    std::fprintf(stderr, "ringlb-demo-backend %s listening on %s\n", name.c_str(), listen_text.c_str());
    int status = serve(listener, name);
    ::close(listener);
    return status;
}

}  // namespace

int main(int argc, char** argv) {
    try {
        return run(argc, argv);
    } catch (const std::exception& e) {
        std::fprintf(stderr, "ringlb-demo-backend: %s\n", e.what());
        return 1;
    }
}
