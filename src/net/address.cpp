#include "ringlb/net/address.hpp"

#include <ostream>

#include <arpa/inet.h>

#include <algorithm>
#include <charconv>
#include <cstring>
#include <variant>

#include "ringlb/util/text.hpp"

namespace ringlb::net {
namespace {

// Either a parsed address or the reason it could not be parsed: parse() and parse_error()
// share one implementation so that they can never disagree.
using ParseOutcome = std::variant<SocketAddress, std::string>;

std::optional<uint16_t> parse_port(std::string_view text) {
    if (text.empty() || text.size() > 5) return std::nullopt;
    if (!std::all_of(text.begin(), text.end(), [](char c) { return c >= '0' && c <= '9'; })) return std::nullopt;
    unsigned value = 0;
    std::from_chars(text.data(), text.data() + text.size(), value);
    if (value > 65535) return std::nullopt;
    return static_cast<uint16_t>(value);
}

bool looks_like_hostname(std::string_view host) {
    return std::any_of(host.begin(), host.end(), [](char c) {
        return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c == '-';
    });
}

SocketAddress make_v4(const in_addr& ip, uint16_t port) {
    sockaddr_in sa{};
    sa.sin_family = AF_INET;
    sa.sin_addr = ip;
    sa.sin_port = htons(port);
    return SocketAddress::from_sockaddr(reinterpret_cast<const sockaddr*>(&sa), sizeof sa);
}

SocketAddress make_v6(const in6_addr& ip, uint16_t port) {
    sockaddr_in6 sa{};
    sa.sin6_family = AF_INET6;
    sa.sin6_addr = ip;
    sa.sin6_port = htons(port);
    return SocketAddress::from_sockaddr(reinterpret_cast<const sockaddr*>(&sa), sizeof sa);
}

ParseOutcome parse_bracketed_v6(std::string_view text) {
    const size_t close = text.find(']');
    if (close == std::string_view::npos) return std::string("missing ']' after IPv6 address");
    const std::string host(text.substr(1, close - 1));
    const std::string_view rest = text.substr(close + 1);
    in6_addr ip{};
    if (inet_pton(AF_INET6, host.c_str(), &ip) != 1) return "invalid IPv6 address '" + host + "'";
    if (rest.empty() || rest.front() != ':') return std::string("missing port (expected [ip]:port, e.g. [::1]:80)");
    const auto port = parse_port(rest.substr(1));
    if (!port) return "invalid port '" + std::string(rest.substr(1)) + "' (expected 0..65535)";
    return make_v6(ip, *port);
}

ParseOutcome parse_v4(std::string_view text) {
    const size_t colon = text.find(':');
    if (colon == std::string_view::npos) return std::string("missing port (expected ip:port, e.g. 1.2.3.4:80)");
    if (text.find(':', colon + 1) != std::string_view::npos)
        return std::string("IPv6 addresses need brackets, e.g. [::1]:80");
    const std::string host(text.substr(0, colon));
    in_addr ip{};
    if (inet_pton(AF_INET, host.c_str(), &ip) != 1) {
        if (looks_like_hostname(host)) return "hostnames are not supported, use an IP address instead of '" + host + "'";
        return "invalid IPv4 address '" + host + "'";
    }
    const auto port = parse_port(text.substr(colon + 1));
    if (!port) return "invalid port '" + std::string(text.substr(colon + 1)) + "' (expected 0..65535)";
    return make_v4(ip, *port);
}

ParseOutcome parse_outcome(std::string_view text) {
    if (text.empty()) return std::string("empty address");
    // inet_pton reads a C string: whatever followed a NUL would be ignored without this.
    if (std::string problem = control_byte_problem(text); !problem.empty()) return problem;
    if (text.front() == '[') return parse_bracketed_v6(text);
    return parse_v4(text);
}

}  // namespace

std::optional<SocketAddress> SocketAddress::parse(std::string_view text) {
    auto outcome = parse_outcome(text);
    if (auto* address = std::get_if<SocketAddress>(&outcome)) return *address;
    return std::nullopt;
}

std::string SocketAddress::parse_error(std::string_view text) {
    auto outcome = parse_outcome(text);
    if (auto* reason = std::get_if<std::string>(&outcome)) return *reason;
    return {};
}

SocketAddress SocketAddress::from_sockaddr(const sockaddr* sa, socklen_t len) {
    SocketAddress address;
    if (sa == nullptr) return address;
    const bool known = (sa->sa_family == AF_INET && len >= socklen_t(sizeof(sockaddr_in))) ||
                       (sa->sa_family == AF_INET6 && len >= socklen_t(sizeof(sockaddr_in6)));
    if (known) std::memcpy(&address.storage_, sa, std::min<size_t>(len, sizeof address.storage_));
    return address;
}

socklen_t SocketAddress::length() const {
    if (is_v4()) return sizeof(sockaddr_in);
    if (is_v6()) return sizeof(sockaddr_in6);
    return 0;
}

uint16_t SocketAddress::port() const {
    if (is_v4()) return ntohs(storage_.v4.sin_port);
    if (is_v6()) return ntohs(storage_.v6.sin6_port);
    return 0;
}

std::string SocketAddress::ip_string() const {
    char buffer[INET6_ADDRSTRLEN] = {};
    if (is_v4()) inet_ntop(AF_INET, &storage_.v4.sin_addr, buffer, sizeof buffer);
    else if (is_v6()) inet_ntop(AF_INET6, &storage_.v6.sin6_addr, buffer, sizeof buffer);
    else return "(none)";
    return buffer;
}

std::string SocketAddress::to_string() const {
    if (is_v4()) return ip_string() + ":" + std::to_string(port());
    if (!is_v6()) return "(none)";
    std::string text = "[";
    text += ip_string();
    text += "]:";
    text += std::to_string(port());
    return text;
}

bool SocketAddress::operator==(const SocketAddress& other) const {
    if (family() != other.family() || port() != other.port()) return false;
    if (is_v4()) return storage_.v4.sin_addr.s_addr == other.storage_.v4.sin_addr.s_addr;
    if (is_v6()) return std::memcmp(&storage_.v6.sin6_addr, &other.storage_.v6.sin6_addr, sizeof(in6_addr)) == 0;
    return true;  // both unspecified
}

IpKey IpKey::of(const SocketAddress& address) {
    IpKey key;
    if (address.is_v4()) {
        const auto* v4 = reinterpret_cast<const sockaddr_in*>(address.sockaddr_ptr());
        key.lo = (uint64_t{0xFFFF} << 32) | ntohl(v4->sin_addr.s_addr);  // ::ffff:a.b.c.d
    } else if (address.is_v6()) {
        const auto* bytes = reinterpret_cast<const sockaddr_in6*>(address.sockaddr_ptr())->sin6_addr.s6_addr;
        for (int i = 0; i < 8; ++i) key.hi = (key.hi << 8) | bytes[i];
        for (int i = 8; i < 16; ++i) key.lo = (key.lo << 8) | bytes[i];
    }
    return key;
}

std::ostream& operator<<(std::ostream& out, const SocketAddress& address) { return out << address.to_string(); }

}  // namespace ringlb::net
