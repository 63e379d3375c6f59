#include "ringlb/net/client_hello.hpp"

#include <cstdint>
#include <optional>

namespace ringlb::net::tls {
namespace {

// ---------------------------------------------------------------------------------------------
// Wire constants (RFC 8446 sections 4 and 5.1, RFC 6066 section 3, RFC 7301 section 3.1)

constexpr uint8_t kHandshakeRecord = 22;
constexpr uint8_t kRecordMajorVersion = 3;
constexpr uint8_t kMaxRecordMinorVersion = 4;  // 3.0 (SSL 3) .. 3.4; real clients send 3.1 or 3.3
constexpr size_t kRecordHeaderBytes = 5;
constexpr size_t kMaxRecordPayload = 16384;  // 2^14
constexpr uint8_t kClientHelloType = 1;
constexpr size_t kHandshakeHeaderBytes = 4;  // type, 24-bit length
constexpr size_t kRandomBytes = 32;
constexpr size_t kMaxSessionIdBytes = 32;
constexpr uint16_t kServerNameExtension = 0;
constexpr uint16_t kAlpnExtension = 16;
constexpr uint8_t kHostNameType = 0;
constexpr size_t kMaxHostNameBytes = 255;

ClientHello need_more(size_t wanted) {
    ClientHello hello;
    hello.wanted = wanted;
    return hello;
}

ClientHello invalid(std::string why) {
    ClientHello hello;
    hello.status = ClientHello::Status::Invalid;
    hello.error = std::move(why);
    return hello;
}

std::string hex_byte(uint8_t value) {
    constexpr std::string_view kDigits = "0123456789abcdef";
    return {'0', 'x', kDigits[value >> 4], kDigits[value & 0xF]};
}

uint8_t byte_at(std::span<const std::byte> data, size_t at) { return static_cast<uint8_t>(data[at]); }

// ---------------------------------------------------------------------------------------------
// The record layer: the handshake bytes the records carry, joined.

struct Handshake {
    std::string bytes;      // the records' payloads, in order
    size_t records_end = 0;  // where the last complete record ends in the input
};

// The payloads of the complete handshake records at the start of `data`, stopping once `enough`
// payload bytes are there (or with an error, or at a partial record).
struct Records {
    Handshake handshake;
    std::optional<ClientHello> verdict;  // set: Invalid, or NeedMore when a record is partial
};

Records read_records(std::span<const std::byte> data, size_t enough) {
    Records out;
    size_t at = 0;
    while (out.handshake.bytes.size() < enough) {
        const size_t left = data.size() - at;
        // Each header byte is checked as soon as it is there, so garbage fails at once.
        if (left >= 1 && byte_at(data, at) != kHandshakeRecord) {
            out.verdict = invalid((at == 0 ? "not a TLS handshake record (first byte " : "a record of type ") +
                                  hex_byte(byte_at(data, at)) + (at == 0 ? ")" : " before the ClientHello ended"));
            return out;
        }
        if (left >= 2 && byte_at(data, at + 1) != kRecordMajorVersion) {
            out.verdict = invalid("TLS record version major " + hex_byte(byte_at(data, at + 1)) + " (not 0x03)");
            return out;
        }
        if (left >= 3 && byte_at(data, at + 2) > kMaxRecordMinorVersion) {
            out.verdict = invalid("TLS record version minor " + hex_byte(byte_at(data, at + 2)));
            return out;
        }
        if (left < kRecordHeaderBytes) {
            out.verdict = need_more(at + kRecordHeaderBytes);
            return out;
        }
        const size_t length = (size_t{byte_at(data, at + 3)} << 8) | byte_at(data, at + 4);
        if (length == 0 || length > kMaxRecordPayload) {
            out.verdict = invalid("TLS handshake record of " + std::to_string(length) + " bytes");
            return out;
        }
        const size_t end = at + kRecordHeaderBytes + length;
        if (end > kMaxClientHelloBytes) {
            out.verdict = invalid("ClientHello longer than " + std::to_string(kMaxClientHelloBytes) + " bytes");
            return out;
        }
        if (data.size() < end) {
            out.verdict = need_more(end);
            return out;
        }
        const auto* payload = reinterpret_cast<const char*>(data.data() + at + kRecordHeaderBytes);
        out.handshake.bytes.append(payload, length);
        out.handshake.records_end = at = end;
    }
    return out;
}

// ---------------------------------------------------------------------------------------------
// The message: a cursor over the ClientHello's body that fails on any overrun.

class Reader {
public:
    explicit Reader(std::string_view bytes) : bytes_(bytes) {}

    bool empty() const { return bytes_.empty(); }
    std::optional<uint8_t> u8() {
        if (bytes_.empty()) return std::nullopt;
        const auto value = static_cast<uint8_t>(bytes_[0]);
        bytes_.remove_prefix(1);
        return value;
    }
    std::optional<uint16_t> u16() {
        if (bytes_.size() < 2) return std::nullopt;
        const auto value = static_cast<uint16_t>((static_cast<uint8_t>(bytes_[0]) << 8) | static_cast<uint8_t>(bytes_[1]));
        bytes_.remove_prefix(2);
        return value;
    }
    std::optional<std::string_view> take(size_t count) {
        if (bytes_.size() < count) return std::nullopt;
        const std::string_view taken = bytes_.substr(0, count);
        bytes_.remove_prefix(count);
        return taken;
    }
    // A block behind a 1- or 2-byte length.
    std::optional<std::string_view> block8() {
        const auto length = u8();
        return length ? take(*length) : std::nullopt;
    }
    std::optional<std::string_view> block16() {
        const auto length = u16();
        return length ? take(*length) : std::nullopt;
    }

private:
    std::string_view bytes_;
};

bool is_host_name_char(char c) {
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '-' || c == '_' ||
           c == '.';
}

std::string lowercase(std::string_view text) {
    std::string out(text);
    for (char& c : out)
        if (c >= 'A' && c <= 'Z') c = static_cast<char>(c - 'A' + 'a');
    return out;
}

// server_name: a list of (type, name); the first host_name counts, other types are skipped.
std::optional<std::string> read_server_name(std::string_view extension, ClientHello& hello) {
    Reader outer(extension);
    const auto list = outer.block16();
    if (!list || !outer.empty()) return "server_name extension: bad length";
    Reader names(*list);
    if (names.empty()) return "server_name extension: empty list";
    while (!names.empty()) {
        const auto type = names.u8();
        const auto name = names.block16();
        if (!type || !name) return "server_name extension: bad entry length";
        if (*type != kHostNameType || !hello.server_name.empty()) continue;
        if (name->empty() || name->size() > kMaxHostNameBytes)
            return "server_name of " + std::to_string(name->size()) + " bytes";
        for (const char c : *name)
            if (!is_host_name_char(c)) return "server_name holds byte " + hex_byte(static_cast<uint8_t>(c));
        hello.server_name = lowercase(*name);
    }
    return std::nullopt;
}

std::optional<std::string> read_alpn(std::string_view extension, ClientHello& hello) {
    Reader outer(extension);
    const auto list = outer.block16();
    if (!list || !outer.empty()) return "ALPN extension: bad length";
    Reader protocols(*list);
    if (protocols.empty()) return "ALPN extension: empty list";
    while (!protocols.empty()) {
        const auto protocol = protocols.block8();
        if (!protocol) return "ALPN extension: bad protocol length";
        if (protocol->empty()) return "ALPN extension: empty protocol name";
        hello.alpn.emplace_back(*protocol);
    }
    return std::nullopt;
}

std::optional<std::string> read_extensions(Reader& body, ClientHello& hello) {
    if (body.empty()) return std::nullopt;  // TLS 1.2 and older may send none
    const auto block = body.block16();
    if (!block || !body.empty()) return "extensions: bad length";
    Reader extensions(*block);
    bool seen_server_name = false, seen_alpn = false;
    while (!extensions.empty()) {
        const auto type = extensions.u16();
        const auto data = extensions.block16();
        if (!type || !data) return "extension: bad length";
        std::optional<std::string> error;
        if (*type == kServerNameExtension) {
            if (seen_server_name) return "server_name extension twice";
            seen_server_name = true;
            error = read_server_name(*data, hello);
        } else if (*type == kAlpnExtension) {
            if (seen_alpn) return "ALPN extension twice";
            seen_alpn = true;
            error = read_alpn(*data, hello);
        }
        if (error) return error;
    }
    return std::nullopt;
}

std::optional<std::string> read_body(std::string_view message, ClientHello& hello) {
    Reader body(message);
    const auto legacy_version = body.u16();
    const auto random = body.take(kRandomBytes);
    if (!legacy_version || !random) return "ClientHello too short";
    const auto session_id = body.block8();
    if (!session_id || session_id->size() > kMaxSessionIdBytes) return "ClientHello: bad session id";
    const auto cipher_suites = body.block16();
    if (!cipher_suites || cipher_suites->empty() || cipher_suites->size() % 2 != 0) return "ClientHello: bad cipher suites";
    const auto compression = body.block8();
    if (!compression || compression->empty()) return "ClientHello: bad compression methods";
    return read_extensions(body, hello);
}

}  // namespace

ClientHello parse_client_hello(std::span<const std::byte> data) {
    // First the handshake message's header, then the whole message.
    Records head = read_records(data, kHandshakeHeaderBytes);
    if (head.verdict) return *head.verdict;
    const std::string& start = head.handshake.bytes;
    if (static_cast<uint8_t>(start[0]) != kClientHelloType)
        return invalid("handshake message type " + hex_byte(static_cast<uint8_t>(start[0])) + " (not a ClientHello)");
    const size_t length = (size_t{static_cast<uint8_t>(start[1])} << 16) | (size_t{static_cast<uint8_t>(start[2])} << 8) |
                          static_cast<uint8_t>(start[3]);
    if (length + kHandshakeHeaderBytes + kRecordHeaderBytes > kMaxClientHelloBytes)
        return invalid("ClientHello of " + std::to_string(length) + " bytes (at most " +
                       std::to_string(kMaxClientHelloBytes) + " with its records are read)");
    Records whole = read_records(data, kHandshakeHeaderBytes + length);
    if (whole.verdict) return *whole.verdict;
    ClientHello hello;
    const std::string_view message = std::string_view(whole.handshake.bytes).substr(kHandshakeHeaderBytes, length);
    if (auto error = read_body(message, hello)) return invalid(std::move(*error));
    hello.status = ClientHello::Status::Done;
    hello.consumed = whole.handshake.records_end;
    return hello;
}

bool server_name_matches(std::string_view pattern, std::string_view name) {
    if (!pattern.starts_with("*.")) return pattern == name;
    const std::string_view suffix = pattern.substr(1);  // ".example.org"
    if (name.size() <= suffix.size() || !name.ends_with(suffix)) return false;
    const std::string_view label = name.substr(0, name.size() - suffix.size());
    return label.find('.') == std::string_view::npos;
}

}  // namespace ringlb::net::tls
