#pragma once
// Descriptors that pass from a running ringlb to the binary it starts for an upgrade. The old
// process starts the new one with them open (from fd 3 on, in order) and names each in the
// environment variable RINGLB_HANDOVER ("report:3 listen:4 listen:5 claim:6"): the socket the
// new process reports its readiness on, every listening socket of every worker, and the
// one-instance claims (see listen_lock.hpp).
#include <sys/types.h>

#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "ringlb/net/socket.hpp"

namespace ringlb::net {

inline constexpr const char* kHandoverVariable = "RINGLB_HANDOVER";

// ListenHeld: a listening socket the service manager holds too (socket activation).
enum class HandoverKind { Report, Listen, ListenHeld, Claim };

struct HandoverEntry {
    HandoverKind kind = HandoverKind::Listen;
    int fd = -1;
};

std::string encode_handover(const std::vector<HandoverEntry>& entries);
// nullopt when the text is malformed (an unknown kind, a bad number, a descriptor below 3).
std::optional<std::vector<HandoverEntry>> decode_handover(std::string_view text);

// What the new process received.
struct Handover {
    UniqueFd report;
    std::vector<std::pair<UniqueFd, bool>> listeners;  // with whether the service manager holds it too
    std::vector<UniqueFd> claims;
};

// Reads and removes RINGLB_HANDOVER and takes the descriptors it names (made close-on-exec).
// nullopt when the variable is absent; throws std::runtime_error when it is malformed or names a
// descriptor that is not open. Call before any thread starts.
std::optional<Handover> take_handover();

// Starts `binary` with `argv` and the environment `environment` ("NAME=value" entries), with
// `descriptors` open in it as fds 3, 4, ... in that order (every other descriptor of this
// process is close-on-exec and stays behind). Returns its pid; throws SystemError.
pid_t spawn_with_descriptors(const std::string& binary, const std::vector<std::string>& argv,
                             const std::vector<std::string>& environment, const std::vector<int>& descriptors);

}  // namespace ringlb::net
