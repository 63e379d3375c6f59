#include "ringlb/net/handover.hpp"

#include <fcntl.h>
#include <spawn.h>
#include <unistd.h>

#include <cerrno>
#include <charconv>
#include <cstdlib>
#include <stdexcept>

namespace ringlb::net {

namespace {

constexpr int kFirstPassedFd = 3;

const char* kind_name(HandoverKind kind) {
    switch (kind) {
        case HandoverKind::Report: return "report";
        case HandoverKind::Listen: return "listen";
        case HandoverKind::ListenHeld: return "listen-held";
        case HandoverKind::Claim: return "claim";
    }
    return "?";
}

std::optional<HandoverKind> kind_of(std::string_view name) {
    for (HandoverKind kind : {HandoverKind::Report, HandoverKind::Listen, HandoverKind::ListenHeld, HandoverKind::Claim})
        if (name == kind_name(kind)) return kind;
    return std::nullopt;
}

// Owns the temporary copies made for a spawn.
struct Copies {
    std::vector<UniqueFd> fds;
};

}  // namespace

std::string encode_handover(const std::vector<HandoverEntry>& entries) {
    std::string text;
    for (const HandoverEntry& entry : entries) {
        if (!text.empty()) text += ' ';
        text += kind_name(entry.kind);
        text += ':';
        text += std::to_string(entry.fd);
    }
    return text;
}

std::optional<std::vector<HandoverEntry>> decode_handover(std::string_view text) {
    std::vector<HandoverEntry> entries;
    for (bool more = !text.empty(); more;) {
        const size_t space = text.find(' ');
        const std::string_view item = text.substr(0, space);
        more = space != std::string_view::npos;
        if (more) text.remove_prefix(space + 1);
        const size_t colon = item.find(':');
        if (colon == std::string_view::npos) return std::nullopt;
        const std::optional<HandoverKind> kind = kind_of(item.substr(0, colon));
        const std::string_view number = item.substr(colon + 1);
        int fd = -1;
        const auto [end, error] = std::from_chars(number.data(), number.data() + number.size(), fd);
        if (!kind || error != std::errc() || end != number.data() + number.size() || fd < kFirstPassedFd)
            return std::nullopt;
        entries.push_back({*kind, fd});
    }
    return entries;
}

std::optional<Handover> take_handover() {
    const char* value = std::getenv(kHandoverVariable);
    if (value == nullptr) return std::nullopt;
    const std::string text(value);
    ::unsetenv(kHandoverVariable);
    const std::optional<std::vector<HandoverEntry>> entries = decode_handover(text);
    if (!entries) throw std::runtime_error(std::string(kHandoverVariable) + " is malformed: \"" + text + "\"");
    Handover handover;
    for (const HandoverEntry& entry : *entries) {
        if (::fcntl(entry.fd, F_SETFD, FD_CLOEXEC) != 0)
            throw SystemError(std::string(kHandoverVariable) + " names fd " + std::to_string(entry.fd), errno);
        UniqueFd fd(entry.fd);
        switch (entry.kind) {
            case HandoverKind::Report: handover.report = std::move(fd); break;
            case HandoverKind::Listen: handover.listeners.emplace_back(std::move(fd), false); break;
            case HandoverKind::ListenHeld: handover.listeners.emplace_back(std::move(fd), true); break;
            case HandoverKind::Claim: handover.claims.push_back(std::move(fd)); break;
        }
    }
    return handover;
}

pid_t spawn_with_descriptors(const std::string& binary, const std::vector<std::string>& argv,
                             const std::vector<std::string>& environment, const std::vector<int>& descriptors) {
    // Copies above the target range first, so that no dup2 overwrites a source still to come
    // (dup2 onto a different number also clears close-on-exec on the target).
    Copies copies;
    const int above = kFirstPassedFd + static_cast<int>(descriptors.size());
    for (int fd : descriptors) {
        copies.fds.emplace_back(::fcntl(fd, F_DUPFD_CLOEXEC, above));
        if (!copies.fds.back()) throw SystemError("dup of fd " + std::to_string(fd) + " for the new process", errno);
    }
    posix_spawn_file_actions_t actions;
    if (const int error = posix_spawn_file_actions_init(&actions); error != 0)
        throw SystemError("posix_spawn_file_actions_init", error);
    int error = 0;
    for (size_t i = 0; i < copies.fds.size() && error == 0; ++i)
        error = posix_spawn_file_actions_adddup2(&actions, copies.fds[i].get(), kFirstPassedFd + static_cast<int>(i));
    std::vector<char*> args;
    args.reserve(argv.size() + 1);
    for (const std::string& arg : argv) args.push_back(const_cast<char*>(arg.c_str()));
    args.push_back(nullptr);
    std::vector<char*> env;
    env.reserve(environment.size() + 1);
    for (const std::string& entry : environment) env.push_back(const_cast<char*>(entry.c_str()));
    env.push_back(nullptr);
    pid_t pid = -1;
    if (error == 0) error = posix_spawn(&pid, binary.c_str(), &actions, nullptr, args.data(), env.data());
    posix_spawn_file_actions_destroy(&actions);
    if (error != 0) throw SystemError("starting " + binary, error);
    return pid;
}

}  // namespace ringlb::net
