#include "ringlb/app/faults.hpp"

#include <charconv>
#include <stdexcept>

namespace ringlb::app {

namespace {

uint32_t parse_number(std::string_view text, std::string_view item) {
    uint32_t value = 0;
    const auto [end, error] = std::from_chars(text.data(), text.data() + text.size(), value);
    if (error != std::errc() || end != text.data() + text.size() || text.empty())
        throw std::invalid_argument("RINGLB_FAULT: \"" + std::string(item) + "\": not a number: \"" + std::string(text) + "\"");
    return value;
}

// "NAME[:VALUE][@WORKER]" split into its parts.
struct Item {
    std::string_view name;
    std::optional<std::string_view> value;
    std::optional<unsigned> worker;
};

Item split(std::string_view item) {
    Item out;
    std::string_view rest = item;
    if (const auto at = rest.find('@'); at != std::string_view::npos) {
        out.worker = parse_number(rest.substr(at + 1), item);
        rest = rest.substr(0, at);
    }
    if (const auto colon = rest.find(':'); colon != std::string_view::npos) {
        out.value = rest.substr(colon + 1);
        rest = rest.substr(0, colon);
    }
    out.name = rest;
    return out;
}

[[noreturn]] void bad(std::string_view item, const std::string& why) {
    throw std::invalid_argument("RINGLB_FAULT: \"" + std::string(item) + "\": " + why);
}

}  // namespace

FaultHooks parse_fault_hooks(std::string_view text) {
    FaultHooks hooks;
    hooks.text = std::string(text);
    while (!text.empty()) {
        const auto comma = text.find(',');
        const std::string_view item = text.substr(0, comma);
        text = comma == std::string_view::npos ? std::string_view() : text.substr(comma + 1);
        const Item parsed = split(item);
        if (parsed.name == "engine-poll-fails-after") {
            if (!parsed.value) bad(item, "needs a call count, as in engine-poll-fails-after:100");
            hooks.poll_fails_after = parse_number(*parsed.value, item);
            if (hooks.poll_fails_after == 0) bad(item, "the call count starts at 1");
            hooks.poll_fault_worker = parsed.worker;
        } else if (parsed.name == "uring-unavailable") {
            if (parsed.value || !parsed.worker) bad(item, "takes a worker only, as in uring-unavailable@1");
            hooks.uring_unavailable_worker = parsed.worker;
        } else if (parsed.name == "completion-queue") {
            if (!parsed.value || parsed.worker) bad(item, "takes an entry count only, as in completion-queue:16");
            hooks.completion_queue = parse_number(*parsed.value, item);
            const uint32_t n = hooks.completion_queue;
            if (n == 0 || n > 4096 || (n & (n - 1)) != 0) bad(item, "the entry count must be a power of two from 1 to 4096");
        } else if (parsed.name == "worker-stall") {
            if (!parsed.value) bad(item, "needs a duration in milliseconds, as in worker-stall:2000@1");
            hooks.stall_ms = parse_number(*parsed.value, item);
            if (hooks.stall_ms == 0) bad(item, "the duration starts at 1 ms");
            hooks.stall_worker = parsed.worker;
        } else if (parsed.name == "pipe-trim") {
            if (!parsed.value || parsed.worker) bad(item, "takes a duration in milliseconds only, as in pipe-trim:60000");
            hooks.pipe_trim_ms = parse_number(*parsed.value, item);
            if (hooks.pipe_trim_ms == 0) bad(item, "the interval starts at 1 ms");
        } else if (parsed.name == "splice-refused") {
            if (parsed.value || parsed.worker) bad(item, "takes no value and no worker");
            hooks.splice_refused = true;
        } else {
            bad(item, "unknown fault (known: engine-poll-fails-after:N[@W], uring-unavailable@W, completion-queue:N, "
                      "worker-stall:MS[@W], pipe-trim:MS, splice-refused)");
        }
    }
    return hooks;
}

void FaultHooks::apply(unsigned worker, engine::EngineOptions& options) const {
    if (poll_fails_after != 0 && (!poll_fault_worker || *poll_fault_worker == worker))
        options.fail_poll_after = poll_fails_after;
    if (uring_unavailable_worker && *uring_unavailable_worker == worker) options.refuse_uring = true;
    options.refuse_splice = splice_refused;
    if (completion_queue != 0) {
        options.queue_depth = completion_queue;
        options.completion_queue_entries = completion_queue;
    }
}

}  // namespace ringlb::app
