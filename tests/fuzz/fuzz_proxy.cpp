// Fuzz target: the PROXY protocol v1/v2 header parser (net/proxy_protocol.hpp), which reads
// bytes from any client of a listener with accept_proxy on: the most exposed parser in ringlb.
//
// Every call gets a copy of exactly the bytes it may read, so AddressSanitizer reports a read
// past data.size() even for the prefixes below (libFuzzer's own buffer would hide those).
//
// Properties (the contract in proxy_protocol.hpp):
// - Done: 0 < consumed <= size; every strict prefix of the header (the first k bytes, k <
//   consumed) is NeedMore, since a session waits for more bytes on NeedMore and must never give
//   up on a header that would have completed; every longer input that starts with the header is
//   Done with the same result, since the bytes after it are client data;
// - Done addresses come in pairs, of the same family, and encode() of them parses back to them;
// - NeedMore only below kMaxHeaderBytes, so that a session's fixed header buffer never fills up
//   while waiting; Invalid always says why.
#include <cstddef>
#include <string>
#include <string_view>
#include <vector>

#include "fuzz_common.hpp"
#include "ringlb/net/proxy_protocol.hpp"

namespace ringlb::fuzz {
namespace proxy_target {

using net::proxy::Parsed;
using Status = Parsed::Status;

Parsed parse_exact(std::string_view bytes) {
    std::vector<std::byte> exact(bytes.size());
    for (size_t i = 0; i < bytes.size(); ++i) exact[i] = static_cast<std::byte>(bytes[i]);
    return net::proxy::parse(exact);
}

std::string_view status_name(Status status) {
    switch (status) {
        case Status::NeedMore: return "NeedMore";
        case Status::Done: return "Done";
        case Status::Invalid: return "Invalid";
    }
    return "?";
}

bool same_result(const Parsed& a, const Parsed& b) {
    return a.status == b.status && a.consumed == b.consumed && a.source == b.source && a.destination == b.destination;
}

void check_prefixes_need_more(std::string_view input, const Parsed& whole) {
    for (size_t length = 0; length < whole.consumed; ++length) {
        const Parsed prefix = parse_exact(input.substr(0, length));
        require(prefix.status == Status::NeedMore,
                "the first " + std::to_string(length) + " bytes of a Done header of " + std::to_string(whole.consumed) +
                    " bytes are " + std::string(status_name(prefix.status)) + ": " + prefix.error);
    }
}

// Longer inputs than the header: the bytes after it must not change the verdict. Checks every
// length up to the input's, which libFuzzer keeps short (-max_len).
void check_trailing_data_ignored(std::string_view input, const Parsed& whole) {
    for (size_t length = whole.consumed; length < input.size(); ++length) {
        require(same_result(parse_exact(input.substr(0, length)), whole),
                "the header of " + std::to_string(whole.consumed) + " bytes parses differently followed by " +
                    std::to_string(input.size() - length) + " bytes fewer of client data");
    }
}

void check_reencoding(const Parsed& whole) {
    require(whole.source.has_value() == whole.destination.has_value(), "Done with only one of source and destination");
    if (!whole.source) return;
    require(whole.source->family() == whole.destination->family(), "Done with source and destination of two families");
    for (const auto version : {net::proxy::Version::V1, net::proxy::Version::V2}) {
        const std::string header = net::proxy::encode(version, *whole.source, *whole.destination);
        const Parsed again = parse_exact(header);
        require(again.status == Status::Done && again.consumed == header.size() && again.source == whole.source &&
                    again.destination == whole.destination,
                "encode(" + std::string(version == net::proxy::Version::V1 ? "v1" : "v2") + ", " +
                    whole.source->to_string() + ", " + whole.destination->to_string() +
                    ") does not parse back to those addresses");
    }
}

}  // namespace proxy_target

inline void check_proxy(std::string_view input) {
    using proxy_target::Status;
    const proxy_target::Parsed whole = proxy_target::parse_exact(input);
    switch (whole.status) {
        case Status::NeedMore:
            require(input.size() < net::proxy::kMaxHeaderBytes,
                    "NeedMore after " + std::to_string(input.size()) + " bytes, more than any header may have");
            return;
        case Status::Invalid: require(!whole.error.empty(), "Invalid without an error message"); return;
        case Status::Done:
            require(whole.consumed > 0 && whole.consumed <= input.size(),
                    "Done consumed " + std::to_string(whole.consumed) + " of " + std::to_string(input.size()) + " bytes");
            proxy_target::check_prefixes_need_more(input, whole);
            proxy_target::check_trailing_data_ignored(input, whole);
            proxy_target::check_reencoding(whole);
            return;
    }
}

}  // namespace ringlb::fuzz

RINGLB_FUZZ_ENTRY(ringlb::fuzz::check_proxy)
