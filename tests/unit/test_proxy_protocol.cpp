#include <doctest/doctest.h>

#include <cstddef>
#include <optional>
#include <random>
#include <string>
#include <string_view>
#include <vector>

#include "ringlb/net/address.hpp"
#include "ringlb/net/proxy_protocol.hpp"

using ringlb::net::SocketAddress;
using namespace ringlb::net::proxy;
using Status = Parsed::Status;

namespace {

SocketAddress address(std::string_view text) {
    auto parsed = SocketAddress::parse(text);
    REQUIRE_MESSAGE(parsed.has_value(), text);
    return *parsed;
}

// Parses a copy sized exactly to the input, so that AddressSanitizer reports any read past the end.
Parsed parse_bytes(std::string_view bytes) {
    std::vector<std::byte> exact(bytes.size());
    for (size_t i = 0; i < bytes.size(); ++i) exact[i] = static_cast<std::byte>(bytes[i]);
    return parse(exact);
}

bool contains(const std::string& text, std::string_view part) { return text.find(part) != std::string::npos; }

// The v2 signature, written out from the spec rather than taken from the implementation.
const std::string kSignature("\x0D\x0A\x0D\x0A\x00\x0D\x0A\x51\x55\x49\x54\x0A", 12);

std::string bytes(std::initializer_list<int> values) {
    std::string out;
    for (int value : values) out += static_cast<char>(value);
    return out;
}

struct Pair {
    const char* name;
    SocketAddress client;
    SocketAddress local;
};

std::vector<Pair> sample_pairs() {
    return {
        {"IPv4", address("192.0.2.1:56324"), address("198.51.100.2:443")},
        {"IPv6", address("[2001:db8::1]:56324"), address("[2001:db8::2]:443")},
        {"mixed", address("192.0.2.1:56324"), address("[2001:db8::2]:443")},
        {"ports at the bounds", address("0.0.0.0:0"), address("255.255.255.255:65535")},
    };
}

// What the receiver sees for `original`: mixed pairs travel as IPv6, IPv4 mapped.
SocketAddress as_sent(const SocketAddress& original, const Pair& pair) {
    if (pair.client.is_v4() && pair.local.is_v4()) return original;
    if (original.is_v6()) return original;
    return address("[::ffff:" + original.ip_string() + "]:" + std::to_string(original.port()));
}

void check_every_strict_prefix_needs_more(const std::string& header) {
    for (size_t length = 0; length < header.size(); ++length) {
        const Parsed parsed = parse_bytes(std::string_view(header).substr(0, length));
        INFO("prefix length ", length, " of ", header.size(), ": ", parsed.error);
        CHECK(parsed.status == Status::NeedMore);
    }
}

}  // namespace

// ---------------------------------------------------------------------------------------------
// Wire format, checked against bytes written out by hand from the spec

TEST_CASE("proxy v1 encode writes the exact text line") {
    CHECK(encode(Version::V1, address("192.0.2.1:56324"), address("198.51.100.2:443")) ==
          "PROXY TCP4 192.0.2.1 198.51.100.2 56324 443\r\n");
    CHECK(encode(Version::V1, address("[2001:db8::1]:56324"), address("[2001:db8::2]:443")) ==
          "PROXY TCP6 2001:db8::1 2001:db8::2 56324 443\r\n");
    CHECK(encode(Version::V1, address("192.0.2.1:56324"), address("[2001:db8::2]:443")) ==
          "PROXY TCP6 ::ffff:192.0.2.1 2001:db8::2 56324 443\r\n");
    CHECK(encode(Version::V1, address("[2001:db8::1]:56324"), address("198.51.100.2:443")) ==
          "PROXY TCP6 2001:db8::1 ::ffff:198.51.100.2 56324 443\r\n");
    CHECK(encode(Version::V1, SocketAddress{}, address("198.51.100.2:443")) == "PROXY UNKNOWN\r\n");
}

TEST_CASE("proxy v2 encode writes the exact bytes for IPv4") {
    const std::string expected = kSignature + bytes({0x21, 0x11, 0x00, 0x0C,  // v2 PROXY, TCP/IPv4, 12 bytes
                                                     192, 0, 2, 1,             // source
                                                     198, 51, 100, 2,          // destination
                                                     0xDC, 0x04,               // 56324
                                                     0x01, 0xBB});             // 443
    CHECK(encode(Version::V2, address("192.0.2.1:56324"), address("198.51.100.2:443")) == expected);
}

TEST_CASE("proxy v2 encode writes the exact bytes for IPv6 and mixed pairs") {
    const std::string v6_header = kSignature + bytes({0x21, 0x21, 0x00, 0x24,  // v2 PROXY, TCP/IPv6, 36 bytes
                                                      0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1,
                                                      0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 2,
                                                      0xDC, 0x04, 0x01, 0xBB});
    CHECK(encode(Version::V2, address("[2001:db8::1]:56324"), address("[2001:db8::2]:443")) == v6_header);

    const std::string mixed_header = kSignature + bytes({0x21, 0x21, 0x00, 0x24,
                                                         0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xFF, 0xFF, 192, 0, 2, 1,
                                                         0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 2,
                                                         0xDC, 0x04, 0x01, 0xBB});
    CHECK(encode(Version::V2, address("192.0.2.1:56324"), address("[2001:db8::2]:443")) == mixed_header);
}

TEST_CASE("proxy v2 encode of a non-IP address announces UNSPEC without addresses") {
    CHECK(encode(Version::V2, SocketAddress{}, SocketAddress{}) == kSignature + bytes({0x21, 0x00, 0x00, 0x00}));
}

TEST_CASE("proxy parse reads hand-written v1 and v2 headers") {
    SUBCASE("v1 TCP4") {
        const Parsed parsed = parse_bytes("PROXY TCP4 203.0.113.7 10.0.0.1 40000 8080\r\n");
        REQUIRE(parsed.status == Status::Done);
        CHECK(parsed.consumed == 44);
        CHECK(parsed.source == address("203.0.113.7:40000"));
        CHECK(parsed.destination == address("10.0.0.1:8080"));
    }
    SUBCASE("v1 TCP6 with an IPv4-mapped source stays IPv6") {
        const Parsed parsed = parse_bytes("PROXY TCP6 ::ffff:203.0.113.7 ::1 40000 8080\r\n");
        REQUIRE(parsed.status == Status::Done);
        CHECK(parsed.source == address("[::ffff:203.0.113.7]:40000"));
        CHECK(parsed.destination == address("[::1]:8080"));
    }
    SUBCASE("v2 TCP over IPv4") {
        const std::string header = kSignature + bytes({0x21, 0x11, 0x00, 0x0C, 203, 0, 113, 7, 10, 0, 0, 1,
                                                       0x9C, 0x40, 0x1F, 0x90});
        const Parsed parsed = parse_bytes(header);
        REQUIRE(parsed.status == Status::Done);
        CHECK(parsed.consumed == 28);
        CHECK(parsed.source == address("203.0.113.7:40000"));
        CHECK(parsed.destination == address("10.0.0.1:8080"));
    }
    SUBCASE("v2 TCP over IPv6") {
        const std::string header = kSignature + bytes({0x21, 0x21, 0x00, 0x24,
                                                       0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 7,
                                                       0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1,
                                                       0x9C, 0x40, 0x1F, 0x90});
        const Parsed parsed = parse_bytes(header);
        REQUIRE(parsed.status == Status::Done);
        CHECK(parsed.consumed == 52);
        CHECK(parsed.source == address("[2001:db8::7]:40000"));
        CHECK(parsed.destination == address("[::1]:8080"));
    }
}

// ---------------------------------------------------------------------------------------------
// Round trips, trailing data, prefixes

TEST_CASE("proxy parse gives back what encode wrote, for both versions and all families") {
    for (const Version version : {Version::V1, Version::V2}) {
        for (const Pair& pair : sample_pairs()) {
            INFO(pair.name, " v", version == Version::V1 ? 1 : 2);
            const std::string header = encode(version, pair.client, pair.local);
            const Parsed parsed = parse_bytes(header);
            REQUIRE_MESSAGE(parsed.status == Status::Done, parsed.error);
            CHECK(parsed.consumed == header.size());
            REQUIRE(parsed.source.has_value());
            REQUIRE(parsed.destination.has_value());
            CHECK(*parsed.source == as_sent(pair.client, pair));
            CHECK(*parsed.destination == as_sent(pair.local, pair));
        }
    }
}

TEST_CASE("proxy parse stops at the end of the header and leaves client data alone") {
    for (const Version version : {Version::V1, Version::V2}) {
        const std::string header = encode(version, address("192.0.2.1:1234"), address("198.51.100.2:80"));
        // Client data that looks like another header must not confuse the parser either.
        for (const std::string& data : {std::string("GET / HTTP/1.1\r\n\r\n"), header, std::string("\r\n")}) {
            const Parsed parsed = parse_bytes(header + data);
            REQUIRE(parsed.status == Status::Done);
            CHECK(parsed.consumed == header.size());
            CHECK(parsed.source == address("192.0.2.1:1234"));
        }
    }
}

TEST_CASE("proxy parse says NeedMore for every strict prefix of a valid header") {
    std::vector<std::string> headers;
    for (const Version version : {Version::V1, Version::V2})
        for (const Pair& pair : sample_pairs()) headers.push_back(encode(version, pair.client, pair.local));
    headers.push_back("PROXY UNKNOWN\r\n");
    headers.push_back("PROXY UNKNOWN anything\rgoes\nhere\r\n");
    headers.push_back("PROXY TCP6 0000:0000:0000:0000:0000:ffff:1.2.3.4 ::1 1 2\r\n");
    headers.push_back("PROXY TCP6 1:2:3:4:5:6:7:8 ABCD::EF 65535 0\r\n");
    headers.push_back(kSignature + bytes({0x20, 0x00, 0x00, 0x00}));                // LOCAL
    headers.push_back(kSignature + bytes({0x21, 0x11, 0x00, 0x0F, 1, 2, 3, 4, 5, 6, 7, 8, 0, 1, 0, 2,
                                          0x04, 0x00, 0x00}));                        // with a NOOP TLV
    for (const std::string& header : headers) {
        INFO(header.size(), "-byte header");
        REQUIRE(parse_bytes(header).status == Status::Done);
        check_every_strict_prefix_needs_more(header);
    }
}

// ---------------------------------------------------------------------------------------------
// Headers without addresses, TLVs and size limits

TEST_CASE("proxy v1 UNKNOWN is Done without addresses and ignores the rest of its line") {
    for (const std::string_view header : {"PROXY UNKNOWN\r\n", "PROXY UNKNOWN ::1 ::2 1 2\r\n", "PROXY UNKNOWN  x\r\n"}) {
        INFO(header);
        const Parsed parsed = parse_bytes(std::string(header) + "data");
        REQUIRE(parsed.status == Status::Done);
        CHECK(parsed.consumed == header.size());
        CHECK_FALSE(parsed.source.has_value());
        CHECK_FALSE(parsed.destination.has_value());
    }
}

TEST_CASE("proxy v1 accepts 107 bytes and not one more") {
    const std::string longest_address = "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff";
    const std::string longest = "PROXY UNKNOWN " + longest_address + " " + longest_address + " 65535 65535\r\n";
    REQUIRE(longest.size() == kMaxV1HeaderBytes);
    CHECK(parse_bytes(longest).status == Status::Done);

    const std::string too_long = "PROXY UNKNOWN " + longest_address + "  " + longest_address + " 65535 65535\r\n";
    const Parsed parsed = parse_bytes(too_long);
    CHECK(parsed.status == Status::Invalid);
    CHECK(contains(parsed.error, "no CRLF within the first 107 bytes"));
    // And it is rejected as soon as 107 bytes without CRLF have arrived, not later.
    CHECK(parse_bytes(std::string_view(too_long).substr(0, 106)).status == Status::NeedMore);
    CHECK(parse_bytes(std::string_view(too_long).substr(0, 107)).status == Status::Invalid);
}

TEST_CASE("proxy v2 without usable addresses keeps the socket's own") {
    struct Case {
        const char* name;
        std::string header;
    };
    const std::vector<Case> cases = {
        {"LOCAL, UNSPEC", kSignature + bytes({0x20, 0x00, 0x00, 0x00})},
        {"LOCAL ignores a filled-in family", kSignature + bytes({0x20, 0x11, 0x00, 0x0C, 1, 2, 3, 4, 5, 6, 7, 8, 0, 1, 0, 2})},
        {"LOCAL ignores even an unknown family", kSignature + bytes({0x20, 0xFF, 0x00, 0x00})},
        {"PROXY, UNSPEC", kSignature + bytes({0x21, 0x00, 0x00, 0x00})},
        {"PROXY, UNIX stream", kSignature + bytes({0x21, 0x31, 0x00, 0xD8}) + std::string(216, '\0')},
    };
    for (const Case& c : cases) {
        INFO(c.name);
        const Parsed parsed = parse_bytes(c.header + "data");
        REQUIRE_MESSAGE(parsed.status == Status::Done, parsed.error);
        CHECK(parsed.consumed == c.header.size());
        CHECK_FALSE(parsed.source.has_value());
        CHECK_FALSE(parsed.destination.has_value());
    }
}

TEST_CASE("proxy v2 skips TLVs after the addresses and bounds the total size") {
    const auto header_with_block = [](size_t block_bytes) {
        std::string header = kSignature + bytes({0x21, 0x11, static_cast<int>(block_bytes >> 8),
                                                 static_cast<int>(block_bytes & 0xFF), 10, 0, 0, 9, 10, 0, 0, 1,
                                                 0x30, 0x39, 0x00, 0x50});
        header.resize(kV2FixedBytes + block_bytes, '\x04');  // whatever follows the addresses is skipped
        return header;
    };
    const std::string largest = header_with_block(kMaxHeaderBytes - kV2FixedBytes);
    const Parsed parsed = parse_bytes(largest + "client data");
    REQUIRE(parsed.status == Status::Done);
    CHECK(parsed.consumed == kMaxHeaderBytes);
    CHECK(parsed.source == address("10.0.0.9:12345"));
    CHECK(parsed.destination == address("10.0.0.1:80"));

    // Too long is known from the 16 fixed bytes alone: no need to wait for the rest.
    const std::string too_long = header_with_block(kMaxHeaderBytes - kV2FixedBytes + 1);
    const Parsed rejected = parse_bytes(std::string_view(too_long).substr(0, kV2FixedBytes));
    CHECK(rejected.status == Status::Invalid);
    CHECK(contains(rejected.error, "exceeds the limit of 1024"));
}

// ---------------------------------------------------------------------------------------------
// Malformed input

TEST_CASE("proxy parse rejects malformed headers with a useful error") {
    struct Case {
        const char* name;
        std::string input;
        const char* error_part;
    };
    const std::string v4_block = bytes({1, 2, 3, 4, 5, 6, 7, 8, 0, 1, 0, 2});
    const std::vector<Case> cases = {
        // First byte and signatures
        {"garbage first byte", "G", "first byte 0x47"},
        {"TLS hello", bytes({0x16, 0x03, 0x01}), "not a PROXY protocol header"},
        {"HTTP request", "GET / HTTP/1.1\r\n", "not a PROXY protocol header"},
        {"v1 magic misspelt", "PROXZ", "expected \"PROXY\""},
        {"v1 magic lower case", "proxy TCP4", "not a PROXY protocol header"},
        {"v2 signature wrong", std::string("\x0D\x0A\x0D\x0A\x00\x0D\x0A\x51\x55\x49\x55", 11), "bad signature at byte 10"},
        {"v2 signature cut by CRLF", "\r\n\r\nGET", "bad signature at byte 4"},
        // v1 protocol field
        {"v1 protocol unknown", "PROXY TCP5 1.2.3.4 1.2.3.5 1 2\r\n", "unknown protocol \"TCP5\""},
        {"v1 protocol lower case", "PROXY tcp4", "unknown protocol"},
        {"v1 UNKNOWN glued to text", "PROXY UNKNOWNX\r\n", "unknown protocol \"UNKNOWNX\""},
        // v1 addresses
        {"v1 IPv4 with three parts", "PROXY TCP4 1.2.3 1.2.3.5 1 2\r\n", "bad source address \"1.2.3\" for TCP4"},
        {"v1 IPv4 octet too big", "PROXY TCP4 1.2.3.4 1.2.3.256 ", "bad destination address \"1.2.3.256\""},
        {"v1 IPv4 leading zero", "PROXY TCP4 01.2.3.4 1.2.3.5 1 2\r\n", "bad source address \"01.2.3.4\""},
        {"v1 IPv4 five parts", "PROXY TCP4 1.2.3.4.5", "bad source address"},
        {"v1 IPv6 under TCP4", "PROXY TCP4 ::1 ::1 1 2\r\n", "bad source address \"::1\" for TCP4"},
        {"v1 IPv4 under TCP6", "PROXY TCP6 1.2.3.4 ::1 1 2\r\n", "bad source address \"1.2.3.4\" for TCP6"},
        {"v1 IPv6 two gaps", "PROXY TCP6 1::2::3", "bad source address"},
        {"v1 IPv6 too many groups", "PROXY TCP6 1:2:3:4:5:6:7:8:9 ::1 1 2\r\n", "bad source address"},
        {"v1 IPv6 group too long", "PROXY TCP6 12345::", "bad source address"},
        {"v1 IPv6 zone id", "PROXY TCP6 fe80::1%eth0 ::1 1 2\r\n", "bad source address"},
        // v1 ports
        {"v1 port out of range", "PROXY TCP4 1.2.3.4 1.2.3.5 70000 2\r\n", "bad source port \"70000\""},
        {"v1 port just out of range", "PROXY TCP4 1.2.3.4 1.2.3.5 1 65536\r\n", "bad destination port \"65536\""},
        {"v1 port with plus sign", "PROXY TCP4 1.2.3.4 1.2.3.5 +1 2\r\n", "bad source port \"+1\""},
        {"v1 port negative", "PROXY TCP4 1.2.3.4 1.2.3.5 1 -2\r\n", "bad destination port \"-2\""},
        {"v1 port leading zero", "PROXY TCP4 1.2.3.4 1.2.3.5 080 2\r\n", "bad source port \"080\""},
        {"v1 port hex", "PROXY TCP4 1.2.3.4 1.2.3.5 0x50 2\r\n", "bad source port"},
        // v1 spacing and structure
        {"v1 double space", "PROXY TCP4  1.2.3.4 1.2.3.5 1 2\r\n", "extra or missing space before the source address"},
        {"v1 leading space", " PROXY", "first byte 0x20"},
        {"v1 tab instead of space", "PROXY\tTCP4", "expected \"PROXY\""},
        {"v1 trailing space", "PROXY TCP4 1.2.3.4 1.2.3.5 1 2 \r\n", "unexpected data after the destination port"},
        {"v1 extra field", "PROXY TCP4 1.2.3.4 1.2.3.5 1 2 3\r\n", "unexpected data after the destination port"},
        {"v1 missing port", "PROXY TCP4 1.2.3.4 1.2.3.5 1\r\n", "missing destination port"},
        {"v1 missing everything", "PROXY\r\n", "missing protocol"},
        {"v1 bare LF", "PROXY TCP4 1.2.3.4 1.2.3.5 1 2\n", "bad destination port \"2\\x0a\""},
        {"v1 CR not followed by LF", "PROXY TCP4 1.2.3.4 1.2.3.5 1 2\rX", "bad destination port"},
        {"v1 CR too early", "PROXY TCP4 1.2.3.4\r", "missing destination address"},
        {"v1 NUL inside", std::string("PROXY TCP4 1.2.3.4\0", 19), "bad source address \"1.2.3.4\\x00\""},
        {"v1 missing CRLF within 107 bytes", "PROXY UNKNOWN " + std::string(93, 'x'), "no CRLF within the first 107 bytes"},
        // v2 version and command
        {"v2 version 1", kSignature + bytes({0x11}), "unsupported version 1"},
        {"v2 version 3", kSignature + bytes({0x31}), "unsupported version 3"},
        {"v2 command 2", kSignature + bytes({0x22}), "unknown command 2"},
        {"v2 command 15", kSignature + bytes({0x2F}), "unknown command 15"},
        // v2 family and transport
        {"v2 UDP over IPv4", kSignature + bytes({0x21, 0x12}), "datagram transport (family byte 0x12)"},
        {"v2 UDP over IPv6", kSignature + bytes({0x21, 0x22}), "datagram transport"},
        {"v2 UNIX datagram", kSignature + bytes({0x21, 0x32}), "datagram transport"},
        {"v2 unknown family", kSignature + bytes({0x21, 0x41}), "unknown address family/transport byte 0x41"},
        {"v2 unknown transport", kSignature + bytes({0x21, 0x13}), "unknown address family/transport byte 0x13"},
        {"v2 UNSPEC family with STREAM", kSignature + bytes({0x21, 0x01}), "byte 0x01"},
        // v2 length
        {"v2 IPv4 block too short", kSignature + bytes({0x21, 0x11, 0x00, 0x0B}) + v4_block.substr(0, 11),
         "address block of 11 bytes is too short for TCP over IPv4 (needs 12)"},
        {"v2 IPv6 block sized for IPv4", kSignature + bytes({0x21, 0x21, 0x00, 0x0C}) + v4_block,
         "too short for TCP over IPv6 (needs 36)"},
        {"v2 UNIX block too short", kSignature + bytes({0x21, 0x31, 0x00, 0x00}), "too short for UNIX stream (needs 216)"},
        {"v2 longest length", kSignature + bytes({0x21, 0x11, 0xFF, 0xFF}), "65551 bytes exceeds the limit"},
    };
    for (const Case& c : cases) {
        INFO(c.name);
        const Parsed parsed = parse_bytes(c.input);
        CHECK(parsed.status == Status::Invalid);
        INFO("error: ", parsed.error);
        CHECK(contains(parsed.error, c.error_part));
    }
}

TEST_CASE("proxy parse rejects garbage as soon as it shows") {
    CHECK(parse_bytes("X").status == Status::Invalid);
    CHECK(parse_bytes("PROXY TCP4 1.2.3.4  ").status == Status::Invalid);
    CHECK(parse_bytes("PROXY TCP4 1.2.3.9999").status == Status::Invalid);
    CHECK(parse_bytes("PROXY TCP4 1.2.3.4 5.6.7.8 6553").status == Status::NeedMore);
    CHECK(parse_bytes("PROXY TCP4 1.2.3.4 5.6.7.8 65536").status == Status::Invalid);
    CHECK(parse_bytes(kSignature + bytes({0x21, 0x11, 0x00})).status == Status::NeedMore);
    CHECK(parse_bytes(kSignature + bytes({0x21, 0x11, 0x00, 0x0B})).status == Status::Invalid);
}

// ---------------------------------------------------------------------------------------------
// Randomized: hostile bytes never crash, over-read (ASan) or claim more than they hold

namespace {

// Bytes biased towards what the parser looks at, so that random input gets past the first checks.
class RandomInputs {
public:
    explicit RandomInputs(unsigned seed) : random_(seed) {}

    std::string next() {
        switch (pick(4)) {
            case 0: return random_bytes();
            case 1: return v1_alphabet_soup();
            default: return mutated_header();
        }
    }

private:
    size_t pick(size_t bound) { return std::uniform_int_distribution<size_t>(0, bound - 1)(random_); }
    char letter() { return alphabet_[pick(alphabet_.size())]; }

    std::string random_bytes() {
        std::string out(pick(64), '\0');
        for (char& c : out) c = static_cast<char>(pick(256));
        return out;
    }

    std::string v1_alphabet_soup() {
        std::string out = pick(2) ? "PROXY " : "";
        const size_t length = pick(120);
        for (size_t i = 0; i < length; ++i) out += letter();
        return out;
    }

    std::string mutated_header() {
        std::string out = seeds_[pick(seeds_.size())];
        const size_t mutations = 1 + pick(3);
        for (size_t i = 0; i < mutations && !out.empty(); ++i) {
            const size_t at = pick(out.size());
            switch (pick(4)) {
                case 0: out[at] = static_cast<char>(pick(256)); break;
                case 1: out[at] = letter(); break;
                case 2: out.erase(at, 1); break;
                default: out.insert(at, 1, letter()); break;
            }
        }
        if (pick(3) == 0) out.resize(pick(out.size() + 1));
        if (pick(3) == 0) out += "client data";
        return out;
    }

    std::mt19937 random_;
    const std::vector<std::string> seeds_ = {
        encode(Version::V1, address("192.0.2.1:56324"), address("198.51.100.2:443")),
        encode(Version::V1, address("[2001:db8::1]:1"), address("[::ffff:1.2.3.4]:65535")),
        encode(Version::V2, address("192.0.2.1:56324"), address("198.51.100.2:443")),
        encode(Version::V2, address("[2001:db8::1]:1"), address("[::1]:2")),
        "PROXY UNKNOWN\r\n",
        kSignature + bytes({0x20, 0x00, 0x00, 0x00}),
    };
    // Letters of v1 headers plus the bytes that matter in v2 (NUL appended: a literal would end there).
    const std::string alphabet_ = std::string("PROXY TCP46UNKW0123456789abcdefABCDEF.:\r\n\x21\x11") + '\0';
};

// Checked without one assertion per prefix, which would dominate the run time.
std::optional<size_t> first_strict_prefix_not_needing_more(std::string_view header) {
    for (size_t length = 0; length < header.size(); ++length)
        if (parse_bytes(header.substr(0, length)).status != Status::NeedMore) return length;
    return std::nullopt;
}

}  // namespace

TEST_CASE("proxy parse survives 100k random inputs and keeps its promises") {
    RandomInputs inputs(20240611);  // fixed seed: a failure must be reproducible
    size_t done = 0, need_more = 0, invalid = 0;
    for (int round = 0; round < 100'000; ++round) {
        const std::string input = inputs.next();
        const Parsed parsed = parse_bytes(input);
        switch (parsed.status) {
            case Status::Done:
                ++done;
                REQUIRE(parsed.consumed > 0);
                REQUIRE(parsed.consumed <= input.size());
                REQUIRE(parsed.consumed <= kMaxHeaderBytes);
                REQUIRE(parsed.source.has_value() == parsed.destination.has_value());
                // Consistency: no strict prefix of an accepted header may be rejected.
                REQUIRE(first_strict_prefix_not_needing_more(std::string_view(input).substr(0, parsed.consumed)) ==
                        std::nullopt);
                break;
            case Status::NeedMore:
                ++need_more;
                REQUIRE(input.size() < kMaxHeaderBytes);
                break;
            case Status::Invalid:
                ++invalid;
                REQUIRE_FALSE(parsed.error.empty());
                // Early rejection is final: more bytes never make it valid.
                REQUIRE(parse_bytes(input + "\r\n" + input).status == Status::Invalid);
                break;
        }
    }
    // The generator must reach every outcome, or the test proves little.
    CHECK(done > 1000);
    CHECK(need_more > 1000);
    CHECK(invalid > 1000);
    MESSAGE("random inputs: ", done, " done, ", need_more, " need more, ", invalid, " invalid");
}
