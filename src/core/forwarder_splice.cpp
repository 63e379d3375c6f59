// The splice path of the forwarder (rule key `zero_copy`): a direction moves its bytes socket ->
// pipe -> socket with splice(2), so they never pass through user space. The engine takes a pipe
// from its pool only once bytes have arrived and the core gives it back as soon as they have been
// sent on, so a direction waiting for bytes holds none. One pipe's worth at a time: the next
// splice_in is asked for once the pipe is empty, which keeps buffer_size the bound on a
// direction's bytes in flight and lets a would-block mean "nothing to read" (a pipe with bytes in
// it may run out of slots for small segments).
//
// zero_copy = "splice" switches a direction as soon as it is established and idle; "auto" after
// kBulkReceives consecutive receives that each filled a whole buffer, and back to copying after
// kSmallSplices consecutive splices of under kSmallSplice bytes. A direction that finds no pipe
// copies its next kCopyReceivesAfterFallback receives before it tries again.
#include <algorithm>
#include <cerrno>
#include <cstring>

#include "ringlb/core/forwarder.hpp"

namespace ringlb::core {

namespace {

constexpr uint8_t kBulkReceives = 4;
constexpr uint32_t kSmallSplice = 4096;
constexpr uint8_t kSmallSplices = 4;
constexpr uint8_t kCopyReceivesAfterFallback = 16;

}  // namespace

// Whether a direction on the copy path should move to the splice path: then it asks for no more
// receives, and switches once nothing of it is queued or in flight (its bytes keep their order).
// Only once the session is established and any PROXY header or held ClientHello has gone out.
bool Forwarder::wants_splice(const Session& session, const Flow& flow) const {
    if (global_.max_pipes == 0 || flow.copy_receives_left > 0 || flow.eof) return false;
    const config::ZeroCopy mode = rules_[session.rule]->config.zero_copy;
    if (mode == config::ZeroCopy::Off) return false;
    if (session.state != Session::State::Established || session.sending_proxy_header) return false;
    if (mode != config::ZeroCopy::Splice && flow.bulk_receives < kBulkReceives) return false;
    return engine_.splice_refusal() == 0;  // last: asked only of directions that would switch
}

// A receive on the copy path: what zero_copy = "auto" judges bulk by.
void Forwarder::note_receive_for_splice(const Session& session, Flow& flow, uint32_t received) {
    if (flow.copy_receives_left > 0) --flow.copy_receives_left;
    if (rules_[session.rule]->config.zero_copy != config::ZeroCopy::Auto) return;
    const bool filled = received >= engine_.buffer_size();
    flow.bulk_receives = filled ? static_cast<uint8_t>(std::min(flow.bulk_receives + 1, 255)) : 0;
}

// An operator who asked for zero_copy where the kernel or a seccomp filter forbids splice learns
// it once per worker, with the kernel's reason; the streams themselves go on by copying.
void Forwarder::warn_once_if_splice_refused() {
    const int refusal = engine_.splice_refusal();
    if (refusal == 0 || splice_refusal_reported_) return;
    splice_refusal_reported_ = true;
    log_.warn("zero_copy: the kernel refused splice (", std::strerror(refusal),
              "; a seccomp filter may forbid it): this worker copies every stream instead");
}

void Forwarder::pump_spliced(uint32_t slot, Session& session, Side source) {
    Flow& flow = session.flow_from(source);
    const Side destination = other(source);
    if (!flow.recv_pending && !flow.eof && !flow.has_pipe) {
        if (const uint32_t room = throttled_room(slot, session, source, global_.buffer_size); room > 0) {
            engine_.splice_in(session.fd(source).get(), room, token(slot, splice_in_op(source)));
            flow.recv_pending = true;
        }
    }
    if (flow.send_pending || flow.shutdown_pending) return;
    if (flow.pipe_bytes > 0) {
        engine_.splice_out(flow.pipe, session.fd(destination).get(), flow.pipe_bytes,
                           token(slot, splice_out_op(destination)));
        flow.send_pending = true;
    } else if (flow.eof && !flow.finished) {
        engine_.shutdown_write(session.fd(destination).get(), token(slot, shutdown_op(destination)));
        flow.shutdown_pending = true;
    }
}

void Forwarder::on_splice_in(uint32_t slot, Session& session, Side source, const engine::Completion& completion) {
    Flow& flow = session.flow_from(source);
    flow.recv_pending = false;
    if (completion.has_pipe) {  // first, so that whatever happens next gives it back
        flow.has_pipe = true;
        flow.pipe = completion.pipe_id;
        flow.pipe_bytes = static_cast<uint32_t>(completion.result);
    }
    // Before the closing check: the completion that brings the first refusal may find its session
    // closing, and no direction asks for splice after it.
    if (completion.result == -ENOBUFS) warn_once_if_splice_refused();
    if (session.state == Session::State::Closing) {
        release_if_quiet(slot, session);
        return;
    }
    const int result = completion.result;
    if (result > 0) {
        if (const ByteRate rate = byte_rate(session, source); rate.limited())
            flow.bucket.take(static_cast<uint64_t>(result));
        if (rules_[session.rule]->config.zero_copy == config::ZeroCopy::Auto)
            flow.small_splices = static_cast<uint32_t>(result) < kSmallSplice
                                     ? static_cast<uint8_t>(std::min(flow.small_splices + 1, 255))
                                     : 0;
        session.last_activity = now_;
    } else if (result == -ENOBUFS) {  // no pipe to be had (or urgent data): the bytes wait for recv()
        flow.splicing = false;
        flow.bulk_receives = 0;
        flow.copy_receives_left = kCopyReceivesAfterFallback;
    } else if (result == 0) {
        flow.eof = true;
        note_cause(session, source == Side::Client ? EndCause::ClientFin : EndCause::ServerFin);
    } else {
        log_.debug("session ", slot, ": splice from ", to_string(source), ": ", std::strerror(-result));
        close_session(slot, session, true, reset_of(source));
        return;
    }
    pump(slot, session, source);
}

void Forwarder::on_splice_out(uint32_t slot, Session& session, Side destination, int result) {
    const Side source = other(destination);
    Flow& flow = session.flow_from(source);
    flow.send_pending = false;
    if (session.state == Session::State::Closing) {
        release_if_quiet(slot, session);
        return;
    }
    if (result <= 0) {  // a splice of at least one byte never returns 0 on a live stream
        log_.debug("session ", slot, ": splice to ", to_string(destination), ": ",
                   result < 0 ? std::strerror(-result) : "no progress");
        close_session(slot, session, true, reset_of(destination));
        return;
    }
    const auto sent = static_cast<uint32_t>(result);
    flow.pipe_bytes -= sent;
    flow.delivered_bytes += sent;
    ServerTraffic& traffic = rules_[session.rule]->traffic[session.server];
    (source == Side::Client ? traffic.bytes_up : traffic.bytes_down) += sent;
    (source == Side::Client ? traffic.spliced_up : traffic.spliced_down) += sent;
    session.last_activity = now_;
    if (flow.pipe_bytes == 0) {
        engine_.release_pipe(flow.pipe, true);
        flow.has_pipe = false;
        if (flow.small_splices >= kSmallSplices) {  // interactive again: back to copying
            flow.splicing = false;
            flow.small_splices = 0;
            flow.bulk_receives = 0;
        }
    }
    pump(slot, session, source);
}

// A pipe still holding bytes (a session cut short) is closed rather than reused.
void Forwarder::release_pipes(Session& session) {
    for (Flow* flow : {&session.upstream, &session.downstream}) {
        if (!flow->has_pipe) continue;
        engine_.release_pipe(flow->pipe, flow->pipe_bytes == 0);
        flow->has_pipe = false;
        flow->pipe_bytes = 0;
    }
}

}  // namespace ringlb::core
