#include "ringlb/health/active.hpp"

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <exception>
#include <system_error>
#include <utility>

#include "ringlb/health/passive.hpp"
#include "ringlb/net/socket.hpp"

namespace ringlb::health {

namespace {

// A mismatched reply is quoted in the log line; this much of it identifies the problem (a status
// line, an error banner) without flooding the log with a whole page.
constexpr size_t kQuotedReplyBytes = 40;
// The first checks of new servers start this far apart (less when the interval is short), so a
// rule with 100 servers does not open 100 connections in the same millisecond.
constexpr std::chrono::microseconds kStartSpacing{1000};
// user_data value: | generation (24 bits) | slot (32 bits) |; the dispatcher keeps the top byte.
constexpr uint32_t kGenerationMask = (1u << 24) - 1;
// The destructor waits this long at most for the engine to return cancelled requests.
constexpr std::chrono::seconds kDrainLimit{2};

std::string error_text(int error) { return std::system_category().message(error); }

std::string connect_failure(int error) {
    if (error == ECONNREFUSED) return "connect refused";
    return "connect failed: " + error_text(error);
}

std::string plural(unsigned count, const char* noun) {
    return std::to_string(count) + " " + noun + (count == 1 ? "" : "s");
}

// The reply as it can safely appear inside double quotes on one log line.
std::string quote_reply(const std::string& reply) {
    std::string out;
    const size_t shown = std::min(reply.size(), kQuotedReplyBytes);
    for (size_t i = 0; i < shown; ++i) {
        const auto byte = static_cast<unsigned char>(reply[i]);
        switch (byte) {
            case '\r': out += "\\r"; break;
            case '\n': out += "\\n"; break;
            case '\t': out += "\\t"; break;
            case '"': out += "\\\""; break;
            case '\\': out += "\\\\"; break;
            default:
                if (byte >= 0x20 && byte < 0x7f) {
                    out += static_cast<char>(byte);
                } else {
                    char escaped[5];
                    std::snprintf(escaped, sizeof escaped, "\\x%02x", byte);
                    out += escaped;
                }
        }
    }
    if (reply.size() > shown) out += "...";
    return out;
}

}  // namespace

// What the checker knows of one server of one target. Heap-allocated so that a check in flight
// can point at it while set_targets() moves servers between target lists.
struct ActiveChecker::ServerState {
    uint32_t rule_key = 0;
    size_t index = 0;  // in its target's server list, as Report and is_up() name it
    net::SocketAddress address;
    config::SourceConfig source;  // where its checks come from (see CheckTarget::sources)
    std::string name;  // "web/127.0.0.1:9001" for log lines
    std::shared_ptr<const config::HealthCheckConfig> check;
    bool up = false;
    unsigned passes = 0;    // consecutive, counted while DOWN
    unsigned failures = 0;  // consecutive, counted while UP
    Clock::time_point next_check{};
    std::optional<uint32_t> slot;  // the check in flight (or its socket still closing)
    std::string last_failure;
    Counts counts;
};

struct ActiveChecker::Target {
    uint32_t rule_key = 0;
    std::vector<std::unique_ptr<ServerState>> servers;
};

// One check in flight: its socket and how far it got. Exactly one request is pending on the
// socket while the slot is in use, so the slot is freed exactly when that request completes.
struct ActiveChecker::CheckSlot {
    uint32_t index = 0;
    uint32_t generation = 0;  // bumped on each release: a stale completion is recognised
    bool in_use = false;
    Phase phase = Phase::Connecting;
    net::UniqueFd fd;
    ServerState* server = nullptr;  // null once set_targets() removed the server
    // The check as it was when this one started; also keeps `send` alive while it is sent.
    std::shared_ptr<const config::HealthCheckConfig> check;
    Clock::time_point deadline{};
    size_t sent = 0;
    std::string reply;
};

ActiveChecker::ActiveChecker(engine::Dispatcher& dispatcher, Logger& log, Report report)
    : dispatcher_(dispatcher), engine_(dispatcher.engine()), log_(log), report_(std::move(report)) {
    channel_ = dispatcher_.add(*this);
}

ActiveChecker::~ActiveChecker() {
    for (CheckSlot& slot : slots_) {
        if (slot.in_use) abandon(slot);
    }
    // Completions of other components met while draining still go to them through the dispatcher.
    struct Drain final : engine::CompletionHandler {
        ActiveChecker& checker;
        explicit Drain(ActiveChecker& owner) : checker(owner) {}
        void on_completion(const engine::Completion& completion) override {
            if (engine::Dispatcher::channel_of(completion.user_data) == checker.channel_)
                checker.on_completion(completion);
            else
                checker.dispatcher_.on_completion(completion);
        }
    } drain(*this);
    auto busy = [this] {
        return std::any_of(slots_.begin(), slots_.end(), [](const CheckSlot& slot) { return slot.in_use; });
    };
    const auto give_up = Clock::now() + kDrainLimit;
    try {
        while (busy() && Clock::now() < give_up) engine_.poll(std::chrono::milliseconds(10), drain);
    } catch (const std::exception& error) {
        log_.error("health checks: stopping: ", error.what());
    }
    for (CheckSlot& slot : slots_) {
        if (!slot.in_use) continue;
        log_.error("health checks: stopping: the engine did not return a cancelled request on fd ", slot.fd.get(),
                   "; closing it anyway");
        release(slot);
    }
    dispatcher_.remove(channel_);
}

// ---- targets -----------------------------------------------------------------------------

void ActiveChecker::set_targets(std::vector<CheckTarget> targets) {
    const auto now = Clock::now();
    std::vector<Target> previous = std::exchange(targets_, {});
    std::vector<ServerState*> fresh;

    for (CheckTarget& target : targets) {
        if (!target.check.enabled) continue;
        const auto check = std::make_shared<const config::HealthCheckConfig>(std::move(target.check));
        Target& entry = targets_.emplace_back();
        entry.rule_key = target.rule_key;
        auto earlier = std::find_if(previous.begin(), previous.end(),
                                    [&](const Target& t) { return t.rule_key == target.rule_key; });
        for (size_t i = 0; i < target.servers.size(); ++i) {
            std::unique_ptr<ServerState> state;
            if (earlier != previous.end()) {
                // Take the first not yet claimed: a rule may list one address twice.
                auto same = std::find_if(earlier->servers.begin(), earlier->servers.end(), [&](const auto& s) {
                    return s && s->address == target.servers[i];
                });
                if (same != earlier->servers.end()) state = std::move(*same);
            }
            if (!state) {
                state = std::make_unique<ServerState>();
                state->address = target.servers[i];
                fresh.push_back(state.get());
            }
            state->rule_key = target.rule_key;
            state->index = i;
            state->source = i < target.sources.size() ? target.sources[i] : config::SourceConfig{};
            state->name = target.rule_id + "/" + target.servers[i].to_string();
            state->check = check;
            entry.servers.push_back(std::move(state));
        }
    }

    // Whatever was not claimed is gone: its check's completion must find no server to update.
    for (Target& target : previous) {
        for (auto& server : target.servers) {
            if (server && server->slot) abandon(slots_[*server->slot]);
        }
    }

    if (!fresh.empty()) {
        auto shortest = fresh.front()->check->interval;
        for (const ServerState* server : fresh) shortest = std::min(shortest, server->check->interval);
        const auto spacing = std::min<std::chrono::microseconds>(
            kStartSpacing, std::chrono::duration_cast<std::chrono::microseconds>(shortest) /
                               static_cast<int64_t>(fresh.size()));
        for (size_t k = 0; k < fresh.size(); ++k) fresh[k]->next_check = now + spacing * static_cast<int64_t>(k);
    }
    start_due_checks(now);
}

const ActiveChecker::ServerState* ActiveChecker::find(uint32_t rule_key, size_t server_index) const {
    for (const Target& target : targets_) {
        if (target.rule_key == rule_key)
            return server_index < target.servers.size() ? target.servers[server_index].get() : nullptr;
    }
    return nullptr;
}

bool ActiveChecker::is_up(uint32_t rule_key, size_t server_index) const {
    const ServerState* server = find(rule_key, server_index);
    return server != nullptr && server->up;
}

ActiveChecker::Counts ActiveChecker::counts(uint32_t rule_key, size_t server_index) const {
    const ServerState* server = find(rule_key, server_index);
    return server != nullptr ? server->counts : Counts{};
}

std::string ActiveChecker::last_failure(uint32_t rule_key, size_t server_index) const {
    const ServerState* server = find(rule_key, server_index);
    return server != nullptr ? server->last_failure : std::string();
}

// ---- scheduling --------------------------------------------------------------------------

std::optional<Clock::time_point> ActiveChecker::on_tick(Clock::time_point now) {
    expire_checks(now);
    start_due_checks(now);
    std::optional<Clock::time_point> next;
    auto consider = [&next](Clock::time_point when) {
        if (!next || when < *next) next = when;
    };
    for (const Target& target : targets_) {
        for (const auto& server : target.servers) {
            if (!server->slot) consider(server->next_check);
        }
    }
    for (const CheckSlot& slot : slots_) {
        if (slot.in_use && slot.phase != Phase::Closing) consider(slot.deadline);
    }
    return next;
}

void ActiveChecker::start_due_checks(Clock::time_point now) {
    for (Target& target : targets_) {
        for (auto& server : target.servers) {
            if (!server->slot && server->next_check <= now) start_check(*server, now);
        }
    }
}

void ActiveChecker::expire_checks(Clock::time_point now) {
    for (CheckSlot& slot : slots_) {
        if (!slot.in_use || slot.phase == Phase::Closing || now < slot.deadline) continue;
        finish(slot, false, "timed out after " + format_duration(slot.check->timeout), true);
    }
}

// ---- one check ---------------------------------------------------------------------------

void ActiveChecker::start_check(ServerState& server, Clock::time_point now) {
    // Start to start, so a slow server is still checked every interval (at once if a check took
    // longer than that).
    server.next_check = now + server.check->interval;
    const int fd = net::new_stream_socket(server.address.family(), engine_.wants_nonblocking_sockets());
    if (fd < 0) {
        record(server, false, "cannot create a socket: " + error_text(-fd));
        return;
    }
    net::UniqueFd socket(fd);
    if (server.source.enabled()) {
        const config::SourceConfig& source = server.source;
        if (const int bound = net::bind_source(fd, source.address, source.first_port, source.last_port,
                                               source_port_cursor_++);
            bound < 0) {
            record(server, false, "cannot bind the source address " + source.to_string() + ": " + error_text(-bound));
            return;
        }
    }
    const uint32_t index = acquire_slot();
    CheckSlot& slot = slots_[index];
    slot.in_use = true;
    slot.phase = Phase::Connecting;
    slot.fd = std::move(socket);
    slot.server = &server;
    slot.check = server.check;
    slot.deadline = now + server.check->timeout;
    slot.sent = 0;
    slot.reply.clear();
    server.slot = index;
    engine_.connect(fd, server.address, user_data_of(slot));
}

void ActiveChecker::on_completion(const engine::Completion& completion) {
    CheckSlot* slot = slot_of(completion.user_data);
    // Only a receive of a live check keeps its bytes; every other buffer goes straight back.
    if ((slot == nullptr || slot->phase != Phase::Receiving) && completion.has_buffer)
        engine_.release_buffer(completion.buffer_id);
    if (slot == nullptr) return;
    switch (slot->phase) {
        case Phase::Connecting: on_connected(*slot, completion.result); break;
        case Phase::Sending: on_sent(*slot, completion.result); break;
        case Phase::Receiving: on_received(*slot, completion); break;
        case Phase::Closing: release(*slot); break;  // the cancelled request is back
    }
}

void ActiveChecker::on_connected(CheckSlot& slot, int32_t result) {
    if (result < 0) {
        finish(slot, false, connect_failure(-result), false);
    } else if (!slot.check->send.empty()) {
        slot.phase = Phase::Sending;
        send_rest(slot);
    } else if (!slot.check->expect.empty()) {
        slot.phase = Phase::Receiving;
        receive_more(slot);
    } else {
        finish(slot, true, {}, false);
    }
}

void ActiveChecker::on_sent(CheckSlot& slot, int32_t result) {
    if (result <= 0) {
        finish(slot, false, "send failed: " + (result < 0 ? error_text(-result) : std::string("nothing sent")), false);
        return;
    }
    slot.sent += static_cast<size_t>(result);
    if (slot.sent < slot.check->send.size()) {
        send_rest(slot);  // a short send: the rest follows
    } else if (!slot.check->expect.empty()) {
        slot.phase = Phase::Receiving;
        receive_more(slot);
    } else {
        finish(slot, true, {}, false);
    }
}

void ActiveChecker::on_received(CheckSlot& slot, const engine::Completion& completion) {
    if (completion.result < 0) {
        finish(slot, false, "receive failed: " + error_text(-completion.result), false);
        return;
    }
    if (completion.result == 0) {  // EOF
        if (slot.reply.empty())
            finish(slot, false, "closed before reply", false);
        else
            judge_reply(slot);  // shorter than `expect`: cannot match, but shows what came
        return;
    }
    // Keep enough to compare and to quote; the rest is of no interest.
    const size_t keep = std::max(slot.check->expect.size(), kQuotedReplyBytes + 1);
    const auto* data = reinterpret_cast<const char*>(engine_.buffer_data(completion.buffer_id));
    const size_t room = keep - std::min(keep, slot.reply.size());
    slot.reply.append(data, std::min(room, static_cast<size_t>(completion.result)));
    engine_.release_buffer(completion.buffer_id);
    if (slot.reply.size() >= slot.check->expect.size())
        judge_reply(slot);
    else
        receive_more(slot);
}

void ActiveChecker::send_rest(CheckSlot& slot) {
    const std::string& text = slot.check->send;
    engine_.send(slot.fd.get(), reinterpret_cast<const std::byte*>(text.data()) + slot.sent,
                 static_cast<uint32_t>(text.size() - slot.sent), user_data_of(slot));
}

void ActiveChecker::receive_more(CheckSlot& slot) {
    // Ask for a little more than `expect` needs so that a wrong reply can be quoted in full.
    const size_t missing = slot.check->expect.size() - slot.reply.size();
    const size_t wanted = std::min<size_t>(std::max(missing, kQuotedReplyBytes + 1), engine_.buffer_size());
    engine_.recv(slot.fd.get(), static_cast<uint32_t>(wanted), user_data_of(slot));
}

void ActiveChecker::judge_reply(CheckSlot& slot) {
    if (slot.reply.starts_with(slot.check->expect))
        finish(slot, true, {}, false);
    else
        finish(slot, false, "reply did not match: got \"" + quote_reply(slot.reply) + "\"", false);
}

void ActiveChecker::finish(CheckSlot& slot, bool passed, const std::string& reason, bool request_pending) {
    if (slot.server != nullptr) record(*slot.server, passed, reason);
    if (request_pending) {
        slot.phase = Phase::Closing;
        engine_.cancel(slot.fd.get());
    } else {
        release(slot);
    }
}

// The server is gone: the check's outcome no longer matters, only its socket does.
void ActiveChecker::abandon(CheckSlot& slot) {
    if (slot.server != nullptr) slot.server->slot.reset();
    slot.server = nullptr;
    if (slot.phase == Phase::Closing) return;  // already cancelled
    slot.phase = Phase::Closing;
    engine_.cancel(slot.fd.get());
}

void ActiveChecker::release(CheckSlot& slot) {
    engine_.forget(slot.fd.get());
    slot.fd.reset();
    if (slot.server != nullptr) slot.server->slot.reset();
    slot.server = nullptr;
    slot.check.reset();
    slot.reply.clear();
    slot.in_use = false;
    slot.generation = (slot.generation + 1) & kGenerationMask;
    free_slots_.push_back(slot.index);
}

uint32_t ActiveChecker::acquire_slot() {
    if (!free_slots_.empty()) {
        const uint32_t index = free_slots_.back();
        free_slots_.pop_back();
        return index;
    }
    const auto index = static_cast<uint32_t>(slots_.size());
    slots_.emplace_back().index = index;
    return index;
}

engine::UserData ActiveChecker::user_data_of(const CheckSlot& slot) const {
    return engine::Dispatcher::tag(channel_, (uint64_t{slot.generation & kGenerationMask} << 32) | slot.index);
}

ActiveChecker::CheckSlot* ActiveChecker::slot_of(engine::UserData user_data) {
    const uint64_t value = engine::Dispatcher::value_of(user_data);
    const auto index = static_cast<uint32_t>(value);
    const auto generation = static_cast<uint32_t>(value >> 32) & kGenerationMask;
    if (index >= slots_.size()) return nullptr;
    CheckSlot& slot = slots_[index];
    if (!slot.in_use || slot.generation != generation) return nullptr;
    return &slot;
}

// ---- rise and fall -----------------------------------------------------------------------

void ActiveChecker::record(ServerState& server, bool passed, const std::string& reason) {
    const config::HealthCheckConfig& check = *server.check;
    if (passed) {
        ++server.counts.passed;
        server.failures = 0;
        if (server.up || ++server.passes < check.rise) return;
        const std::string why = plural(server.passes, "check") + " passed";
        server.up = true;
        ++server.counts.went_up;
        server.passes = 0;
        log_.info("server ", server.name, " UP (", why, ")");
        if (report_) report_(server.rule_key, server.index, true, why);
        return;
    }
    ++server.counts.failed;
    server.passes = 0;
    server.last_failure = reason;
    if (!server.up) {
        log_.debug("health check of server ", server.name, " failed (still DOWN): ", reason);
        return;
    }
    if (++server.failures < check.fall) {
        log_.debug("health check of server ", server.name, " failed (", server.failures, " of ", check.fall,
                   " before DOWN): ", reason);
        return;
    }
    const unsigned failed = server.failures;
    server.up = false;
    ++server.counts.went_down;
    server.failures = 0;
    log_.warn("server ", server.name, " DOWN: ", reason, " (", plural(failed, "check"), ")");
    if (report_) report_(server.rule_key, server.index, false, reason);
}

}  // namespace ringlb::health
