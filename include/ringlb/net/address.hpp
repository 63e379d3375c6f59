#pragma once
// Socket addresses: IPv4 and IPv6 endpoints in one compact value type.
#include <netinet/in.h>
#include <sys/socket.h>

#include <cstdint>
#include <iosfwd>
#include <optional>
#include <string>
#include <string_view>

namespace ringlb::net {

// An IPv4 or IPv6 endpoint. Small (28 bytes) so that a session slot can keep one by value.
class SocketAddress {
public:
    SocketAddress() = default;

    // Parses "1.2.3.4:80" or "[::1]:80". Port 0..65535 required. Returns nullopt on any error;
    // parse_error() explains why for messages.
    static std::optional<SocketAddress> parse(std::string_view text);
    static std::string parse_error(std::string_view text);  // "" when parse() would succeed

    static SocketAddress from_sockaddr(const sockaddr* sa, socklen_t len);

    const sockaddr* sockaddr_ptr() const { return reinterpret_cast<const sockaddr*>(&storage_); }
    sockaddr* sockaddr_ptr() { return reinterpret_cast<sockaddr*>(&storage_); }
    socklen_t length() const;
    static constexpr socklen_t capacity() { return sizeof(sockaddr_in6); }

    int family() const { return storage_.v4.sin_family; }
    bool is_v4() const { return family() == AF_INET; }
    bool is_v6() const { return family() == AF_INET6; }
    uint16_t port() const;

    // "1.2.3.4:80" or "[::1]:80"
    std::string to_string() const;
    // "1.2.3.4" or "::1" (no port, no brackets)
    std::string ip_string() const;

    bool operator==(const SocketAddress& other) const;  // family, ip and port

private:
    union Storage {
        sockaddr_in v4;
        sockaddr_in6 v6;
    } storage_{};
};

// Writes to_string(): log lines can name an address without building the text when the level
// is off.
std::ostream& operator<<(std::ostream& out, const SocketAddress& address);

// The IP part of an address as a key for per-client counting (IPv4 mapped into IPv6 space
// so that "::ffff:1.2.3.4" and "1.2.3.4" count as one client).
struct IpKey {
    uint64_t hi = 0;
    uint64_t lo = 0;
    static IpKey of(const SocketAddress& address);
    bool operator==(const IpKey&) const = default;
};

struct IpKeyHash {
    size_t operator()(const IpKey& key) const noexcept {
        return static_cast<size_t>(key.hi * 0x9E3779B97F4A7C15ULL ^ (key.lo + 0x632BE59BD9B4E019ULL));
    }
};

// Hashes what operator== compares (family, IP, port), for sets of addresses.
struct SocketAddressHash {
    size_t operator()(const SocketAddress& address) const noexcept {
        const size_t ip = IpKeyHash{}(IpKey::of(address));
        return ip ^ ((static_cast<size_t>(address.port()) << 16 | static_cast<size_t>(address.family())) *
                     0xD6E8FEB86659FD93ULL);
    }
};

}  // namespace ringlb::net
