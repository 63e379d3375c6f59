#include "ringlb/engine/uring/uring_engine.hpp"

#include <sys/eventfd.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <optional>
#include <stdexcept>

#include "ringlb/net/socket.hpp"

namespace ringlb::engine {

namespace {

constexpr uint16_t kBufferGroup = 0;
constexpr uint64_t kInternalRequest = 0;  // cancels: their completions carry nothing for the core
constexpr uint64_t kWakeRequest = UINT64_MAX;  // the read armed on the wake eventfd
constexpr uint64_t kProbeRequest = UINT64_MAX - 1;  // the start-up probe for capped multishot receives
constexpr unsigned kCqeBatch = 256;

// Why io_uring_setup failed, in words an operator can act on.
std::string unavailable_hint(int error) {
    switch (error) {
        case ENOSYS:
            return "io_uring_setup is not allowed: a container seccomp profile or an old kernel (allow "
                   "io_uring_setup, io_uring_enter and io_uring_register)";
        case EPERM:
            return "io_uring is disabled: sysctl kernel.io_uring_disabled, or a seccomp profile forbids it";
        case ENOMEM:
            return "not enough locked memory for the ring: raise RLIMIT_MEMLOCK (kernels before 5.12)";
        case EINVAL: return "the kernel is too old for the io_uring features ringlb needs (5.19+)";
        default: return "see the io_uring_setup(2) man page";
    }
}

[[noreturn]] void throw_unavailable(const std::string& what, int error) {
    throw EngineUnavailable("io_uring unavailable: " + what + ": " + std::strerror(error) + "; " +
                            unavailable_hint(error));
}

struct NamedFlag {
    unsigned flag;
    const char* name;
};
constexpr NamedFlag kSetupFlags[] = {
    {IORING_SETUP_SUBMIT_ALL, "submit-all"},
    {IORING_SETUP_SINGLE_ISSUER, "single-issuer"},
    {IORING_SETUP_DEFER_TASKRUN, "defer-taskrun"},
    {IORING_SETUP_COOP_TASKRUN, "coop-taskrun"},
};

// The names of the set-up flags in `flags`, space-separated, in a fixed order.
std::string flag_names(unsigned flags) {
    std::string names;
    for (const NamedFlag& named : kSetupFlags) {
        if (!(flags & named.flag)) continue;
        if (!names.empty()) names += ' ';
        names += named.name;
    }
    return names;
}

// A multishot receive that takes at most one buffer per turn (so connections share the worker
// fairly) and ends by itself once it has received `total` bytes, the room the core had when it
// asked: a connection whose destination is slow then holds no more than its own queue allows,
// and cannot drain the shared buffer ring. The kernel reads the total from the field liburing
// 2.3 calls file_index (optlen in newer headers). Kernels without these limits refuse a
// multishot receive with a length (EINVAL); the start-up probe then turns multishot receives off.
void prep_capped_multishot(io_uring_sqe* sqe, int fd, uint32_t buffer_size, uint32_t total) {
    io_uring_prep_recv_multishot(sqe, fd, nullptr, buffer_size, 0);
    sqe->file_index = total;
    sqe->flags |= IOSQE_BUFFER_SELECT;
    sqe->buf_group = kBufferGroup;
}

}  // namespace

UringEngine::UringEngine(const EngineOptions& options)
    : memory_(options.buffer_size, options.buffer_count), poll_fault_(options.fail_poll_after) {
    set_up_ring(options);
    try {
        set_up_buffer_ring();
        multishot_recv_ = options.multishot_recv && probe_capped_multishot();
        wake_fd_.reset(::eventfd(0, EFD_CLOEXEC));
        if (!wake_fd_) throw net::SystemError("eventfd", errno);
        arm_wake_read();
    } catch (...) {
        io_uring_queue_exit(&ring_);
        throw;
    }
    if (options.multishot_recv && !multishot_recv_) note_unavailable("capped-multishot-recv");
    features_ += " bufring=" + std::to_string(memory_.buffer_count()) + "x" + std::to_string(memory_.buffer_size()) +
                 " multishot-accept" + (multishot_recv_ ? " multishot-recv" : "") +
                 " recv-poll-first send-gather direct-shutdown";
    if (!unavailable_.empty()) features_ += "; unavailable here: " + unavailable_;
    features_ += std::string("; not used: ") + (options.multishot_recv ? "" : "multishot-recv (by configuration) ") +
                 "recv-bundle send-zc splice";
}

UringEngine::~UringEngine() {
    io_uring_queue_exit(&ring_);  // cancels whatever is still in flight before the buffers go
    if (buffer_ring_) ::munmap(buffer_ring_, buffer_ring_bytes_);
}

// The fastest flag set the kernel accepts, falling back one set at a time; the start-up line
// names what was refused on the way.
void UringEngine::set_up_ring(const EngineOptions& options) {
    static constexpr unsigned attempts[] = {
        IORING_SETUP_SUBMIT_ALL | IORING_SETUP_SINGLE_ISSUER | IORING_SETUP_DEFER_TASKRUN,
        IORING_SETUP_SUBMIT_ALL | IORING_SETUP_COOP_TASKRUN,
        IORING_SETUP_SUBMIT_ALL,
        0,
    };
    int error = 0;
    unsigned refused = 0;
    for (const unsigned flags : attempts) {
        io_uring_params params{};
        params.flags = flags | IORING_SETUP_CQSIZE;
        params.cq_entries = options.completion_queue_entries != 0 ? options.completion_queue_entries
                                                                  : options.queue_depth * 8;
        const int result = io_uring_queue_init_params(options.queue_depth, &ring_, &params);
        if (result == 0) {
            features_ = flags == 0 ? "plain-setup" : flag_names(flags);
            unavailable_ = flag_names(refused & ~flags);
            if (io_uring_register_ring_fd(&ring_) == 1)
                features_ += " registered-ring-fd";
            else
                note_unavailable("registered-ring-fd");
            return;
        }
        refused |= flags;
        error = -result;
        if (error != EINVAL) break;  // only "unknown flag" is worth another try
    }
    throw_unavailable("io_uring_setup", error);
}

void UringEngine::set_up_buffer_ring() {
    const uint32_t count = memory_.buffer_count();
    if (count == 0 || (count & (count - 1)) != 0 || count > 32768)
        throw EngineUnavailable("io_uring buffer count must be a power of two up to 32768");
    buffer_ring_bytes_ = count * sizeof(io_uring_buf);
    void* memory = ::mmap(nullptr, buffer_ring_bytes_, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (memory == MAP_FAILED) throw net::SystemError("mmap of the provided buffer ring", errno);
    buffer_ring_ = static_cast<io_uring_buf_ring*>(memory);
    io_uring_buf_ring_init(buffer_ring_);
    io_uring_buf_reg registration{};
    registration.ring_addr = reinterpret_cast<uint64_t>(buffer_ring_);
    registration.ring_entries = count;
    registration.bgid = kBufferGroup;
    if (const int result = io_uring_register_buf_ring(&ring_, &registration, 0); result < 0) {
        ::munmap(buffer_ring_, buffer_ring_bytes_);
        buffer_ring_ = nullptr;
        throw_unavailable("registering a provided buffer ring", -result);
    }
    free_buffers_.reserve(count);
    for (uint32_t id = count; id > 0; --id) free_buffers_.push_back(static_cast<uint16_t>(id - 1));
    window_ = std::min(window_, count);
    offer_buffers();
}

// Tops the kernel's ring up to the window with the most recently returned (warmest) buffers.
void UringEngine::offer_buffers() {
    const int mask = io_uring_buf_ring_mask(memory_.buffer_count());
    int added = 0;
    while (offered_ < window_ && !free_buffers_.empty()) {
        const uint16_t id = free_buffers_.back();
        free_buffers_.pop_back();
        io_uring_buf_ring_add(buffer_ring_, memory_.data(id), memory_.buffer_size(), id, mask, added++);
        ++offered_;
    }
    if (added > 0) io_uring_buf_ring_advance(buffer_ring_, added);
}

// Whether this kernel takes a multishot receive with per-turn and total limits: tried on a
// socket pair holding one byte, before anything else is in the ring.
bool UringEngine::probe_capped_multishot() {
    int pair[2];
    if (::socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, pair) != 0) return false;
    const net::UniqueFd reader(pair[0]);
    const net::UniqueFd writer(pair[1]);
    const char byte = 0;
    if (::write(writer.get(), &byte, 1) != 1) return false;
    io_uring_sqe* sqe = next_sqe();
    prep_capped_multishot(sqe, reader.get(), memory_.buffer_size(), 2 * memory_.buffer_size());
    io_uring_sqe_set_data64(sqe, kProbeRequest);
    io_uring_submit(&ring_);
    bool received = false;
    for (;;) {  // the byte (with F_MORE), then the end of stream once the writer shuts down
        io_uring_cqe* cqe = nullptr;
        __kernel_timespec wait{1, 0};
        if (io_uring_wait_cqe_timeout(&ring_, &cqe, &wait) != 0) return false;  // a late one is dropped in handle()
        const io_uring_cqe copy = *cqe;
        io_uring_cqe_seen(&ring_, cqe);
        handle(copy);  // gives the buffer back
        if (copy.res == 1 && (copy.flags & IORING_CQE_F_MORE)) {
            received = true;
            ::shutdown(writer.get(), SHUT_WR);
        }
        if (!(copy.flags & IORING_CQE_F_MORE)) return received && copy.res == 0;
    }
}

void UringEngine::note_unavailable(const char* feature) {
    if (!unavailable_.empty()) unavailable_ += ' ';
    unavailable_ += feature;
}

io_uring_sqe* UringEngine::next_sqe() {
    io_uring_sqe* sqe = io_uring_get_sqe(&ring_);
    while (!sqe) {  // the submission queue is full: hand it to the kernel and take a fresh one
        // An error here would come back on every try: the ring is unusable, and the worker fails.
        if (const int submitted = io_uring_submit(&ring_); submitted < 0 && submitted != -EINTR)
            throw net::SystemError("io_uring_submit with a full submission queue", -submitted);
        sqe = io_uring_get_sqe(&ring_);
    }
    return sqe;
}

uint32_t UringEngine::new_request(Kind kind, int fd, UserData user_data, uint32_t length) {
    uint32_t index;
    if (free_requests_.empty()) {
        index = static_cast<uint32_t>(requests_.size());
        requests_.emplace_back();
    } else {
        index = free_requests_.back();
        free_requests_.pop_back();
    }
    requests_[index] = Request{user_data, fd, length, kind, kNoGather};
    if (static_cast<size_t>(fd) >= live_by_fd_.size()) {
        std::array<uint32_t, 4> none;
        none.fill(kNoRequest);
        live_by_fd_.resize(static_cast<size_t>(fd) * 2 + 64, none);
        drained_by_fd_.resize(live_by_fd_.size(), false);
    }
    for (uint32_t& slot : live_by_fd_[static_cast<size_t>(fd)]) {
        if (slot == kNoRequest) {
            slot = index;
            return index;
        }
    }
    throw std::logic_error("more than 4 requests in flight on fd " + std::to_string(fd));
}

// Drops the request from its fd's live list: cancel(fd) no longer names it.
void UringEngine::unlink_from_fd(uint32_t index) {
    for (uint32_t& slot : live_by_fd_[static_cast<size_t>(requests_[index].fd)])
        if (slot == index) slot = kNoRequest;
}

void UringEngine::release_request(uint32_t index) {
    unlink_from_fd(index);
    Request& request = requests_[index];
    if (request.gather != kNoGather) {
        gathers_.release(request.gather);
        request.gather = kNoGather;
    }
    free_requests_.push_back(index);
}

// ---- requests ----------------------------------------------------------------------------

void UringEngine::accept(int listen_fd, UserData user_data) {
    // A blocking listener: io_uring then waits for connections itself instead of reporting EAGAIN.
    net::set_nonblocking(listen_fd, false);
    const uint32_t request = new_request(Kind::Accept, listen_fd, user_data);
    io_uring_sqe* sqe = next_sqe();
    io_uring_prep_multishot_accept(sqe, listen_fd, nullptr, nullptr, SOCK_CLOEXEC);
    io_uring_sqe_set_data64(sqe, request + 1);
}

void UringEngine::connect(int fd, const net::SocketAddress& to, UserData user_data) {
    const uint32_t request = new_request(Kind::Connect, fd, user_data);
    io_uring_sqe* sqe = next_sqe();
    io_uring_prep_connect(sqe, fd, to.sockaddr_ptr(), to.length());
    io_uring_sqe_set_data64(sqe, request + 1);
}

// With multishot receives, a socket keeps one receive armed while bytes keep coming, instead of
// one submission (and one poll armed and torn down in the kernel) per receive. A room of one
// buffer or less (the core's queue for that direction is almost full) on a socket with nothing
// armed gets a one-shot receive: receiving ahead would gain nothing there.
void UringEngine::recv(int fd, uint32_t max_bytes, UserData user_data) {
    if (multishot_recv_) {
        Stream& s = stream(fd);
        if (!s.early.empty()) {  // the bytes came before the ask: answered with the next poll
            const Arrival arrival = s.early.front();
            s.early.erase(s.early.begin());
            completions_.push_back(Completion{user_data, arrival.result, false, arrival.has_buffer, arrival.buffer_id});
            return;
        }
        if (s.multishot != kNoRequest || max_bytes > memory_.buffer_size()) {
            s.has_waiter = true;
            s.waiter = user_data;
            s.room = max_bytes;
            if (s.multishot == kNoRequest) arm_multishot(fd, max_bytes);
            return;
        }
    }
    submit_recv(new_request(Kind::Recv, fd, user_data, std::min(max_bytes, memory_.buffer_size())));
}

UringEngine::Stream& UringEngine::stream(int fd) {
    const auto index = static_cast<size_t>(fd);
    if (index >= streams_.size()) streams_.resize(index * 2 + 64);
    return streams_[index];
}

void UringEngine::arm_multishot(int fd, uint32_t max_bytes) {
    const uint32_t request = new_request(Kind::Multishot, fd, 0);
    Stream& s = stream(fd);
    s.multishot = request;
    s.cancelling = false;
    io_uring_sqe* sqe = next_sqe();
    prep_capped_multishot(sqe, fd, memory_.buffer_size(), max_bytes);
    if (drained_by_fd_[static_cast<size_t>(fd)]) sqe->ioprio |= IORING_RECVSEND_POLL_FIRST;
    io_uring_sqe_set_data64(sqe, request + 1);
}

void UringEngine::submit_recv(uint32_t request) {
    const Request& r = requests_[request];
    io_uring_sqe* sqe = next_sqe();
    io_uring_prep_recv(sqe, r.fd, nullptr, r.length, 0);
    if (drained_by_fd_[static_cast<size_t>(r.fd)]) sqe->ioprio |= IORING_RECVSEND_POLL_FIRST;
    sqe->flags |= IOSQE_BUFFER_SELECT;
    sqe->buf_group = kBufferGroup;
    io_uring_sqe_set_data64(sqe, request + 1);
}

void UringEngine::send_parts(int fd, std::span<const SendPart> parts, UserData user_data) {
    const uint32_t gather = parts.size() == 1 ? kNoGather : gathers_.store(parts);
    const uint32_t request = new_request(Kind::Send, fd, user_data);
    requests_[request].gather = gather;
    io_uring_sqe* sqe = next_sqe();
    if (gather == kNoGather)
        io_uring_prep_send(sqe, fd, parts[0].data, parts[0].length, MSG_NOSIGNAL);
    else
        io_uring_prep_sendmsg(sqe, fd, gathers_.message(gather), MSG_NOSIGNAL);
    io_uring_sqe_set_data64(sqe, request + 1);
}

void UringEngine::shutdown_write(int fd, UserData user_data) {
    // shutdown(2) never blocks: done here it saves a submission and a completion per direction
    // of every connection. The result is still delivered with the next poll(), never inline.
    const int result = ::shutdown(fd, SHUT_WR) == 0 ? 0 : -errno;
    completions_.push_back(Completion{user_data, result, false, false, 0});
}

void UringEngine::cancel(int fd) {
    // Receives parked for want of a buffer are not in the kernel: finish them here.
    auto parked_on_fd = [&](uint32_t request) { return requests_[request].fd == fd; };
    for (uint32_t request : parked_recvs_) {
        if (!parked_on_fd(request)) continue;
        completions_.push_back(Completion{requests_[request].user_data, -ECANCELED, false, false, 0});
        release_request(request);
    }
    std::erase_if(parked_recvs_, parked_on_fd);
    if (static_cast<size_t>(fd) < streams_.size()) {
        Stream& s = streams_[static_cast<size_t>(fd)];
        if (s.has_waiter) {  // the core's receive on a multishot: it is answered here
            completions_.push_back(Completion{s.waiter, -ECANCELED, false, false, 0});
            s.has_waiter = false;
        }
        if (s.multishot != kNoRequest) s.cancelling = true;  // by the loop below
    }
    if (static_cast<size_t>(fd) >= live_by_fd_.size()) return;
    for (uint32_t request : live_by_fd_[static_cast<size_t>(fd)])
        if (request != kNoRequest) cancel_request(request);
}

// A multishot receive can outlive the core's interest in its socket (the core had no receive
// pending, or its receive was already answered as cancelled): it is cancelled here and orphaned,
// so that whatever it still delivers goes back to the pool, even once the fd number is reused.
void UringEngine::forget(int fd) {
    if (static_cast<size_t>(fd) < drained_by_fd_.size()) drained_by_fd_[static_cast<size_t>(fd)] = false;
    if (static_cast<size_t>(fd) >= streams_.size()) return;
    Stream& s = streams_[static_cast<size_t>(fd)];
    if (s.multishot != kNoRequest) {
        if (!s.cancelling) cancel_request(s.multishot);
        requests_[s.multishot].orphaned = true;
        unlink_from_fd(s.multishot);
        s.multishot = kNoRequest;
    }
    drop_early_arrivals(s);
    s.cancelling = false;
    s.has_waiter = false;
}

void UringEngine::drop_early_arrivals(Stream& stream) {
    for (const Arrival& arrival : stream.early)
        if (arrival.has_buffer) free_buffers_.push_back(arrival.buffer_id);
    stream.early.clear();
}

void UringEngine::cancel_request(uint32_t request) {
    io_uring_sqe* sqe = next_sqe();
    io_uring_prep_cancel64(sqe, request + 1, 0);
    io_uring_sqe_set_data64(sqe, kInternalRequest);
}

void UringEngine::release_buffer(uint16_t buffer_id) { free_buffers_.push_back(buffer_id); }

// Retries the receives that found the buffer ring empty, oldest first, and no more of them than
// buffers were offered: each takes at least one, so retrying every one (a thousand sessions on a
// pool of 16) would mostly meet an empty ring again and cost a round trip through the kernel each.
void UringEngine::resubmit_parked_recvs() {
    uint32_t budget = offered_;
    size_t retried = 0;
    for (; retried < parked_recvs_.size() && budget > 0; ++retried, --budget) submit_recv(parked_recvs_[retried]);
    parked_recvs_.erase(parked_recvs_.begin(), parked_recvs_.begin() + static_cast<std::ptrdiff_t>(retried));
    size_t looked_at = 0;
    for (; looked_at < parked_streams_.size() && budget > 0; ++looked_at) {
        const int fd = parked_streams_[looked_at];
        const Stream& s = stream(fd);
        if (!s.has_waiter || s.multishot != kNoRequest) continue;  // cancelled, or armed since
        arm_multishot(fd, s.room);
        --budget;
    }
    parked_streams_.erase(parked_streams_.begin(), parked_streams_.begin() + static_cast<std::ptrdiff_t>(looked_at));
}

void UringEngine::arm_wake_read() {
    io_uring_sqe* sqe = next_sqe();
    io_uring_prep_read(sqe, wake_fd_.get(), &wake_value_, sizeof wake_value_, 0);
    io_uring_sqe_set_data64(sqe, kWakeRequest);
}

void UringEngine::wake() {
    const uint64_t one = 1;
    [[maybe_unused]] const ssize_t written = ::write(wake_fd_.get(), &one, sizeof one);
}

// ---- the loop ----------------------------------------------------------------------------

// Doubles the window once for a round that ran short of buffers (not once per receive that did:
// a burst of a hundred would otherwise open the whole pool at once), and halves it after a
// second in which sessions never held half of it, so the buffers the kernel cycles through,
// each of which becomes resident once used, follow the load instead of its peak.
void UringEngine::adjust_window() {
    if (!short_of_buffers_ && window_ <= kMinWindow) return;  // nothing to change: no clock read
    const auto now = std::chrono::steady_clock::now();
    if (short_of_buffers_) {
        short_of_buffers_ = false;
        window_ = std::min(window_ * 2, memory_.buffer_count());
    } else if (now - last_window_change_ < std::chrono::seconds(1)) {
        return;
    } else if (window_ > kMinWindow && peak_in_use_ * 2 < window_) {
        window_ = std::max(window_ / 2, kMinWindow);
    }
    last_window_change_ = now;
    peak_in_use_ = 0;
}

void UringEngine::poll(std::chrono::milliseconds timeout, CompletionHandler& handler) {
    if (poll_fault_.strikes()) throw net::SystemError("io_uring_submit_and_wait_timeout (RINGLB_FAULT)", EBADR);
    adjust_window();
    offer_buffers();
    if ((!parked_recvs_.empty() || !parked_streams_.empty()) && offered_ > 0) resubmit_parked_recvs();
    const bool have_local = !completions_.empty();
    __kernel_timespec wait{};
    if (!have_local) {
        wait.tv_sec = timeout.count() / 1000;
        wait.tv_nsec = (timeout.count() % 1000) * 1000000;
    }
    io_uring_cqe* first = nullptr;
    const int result = io_uring_submit_and_wait_timeout(&ring_, &first, 1, &wait, nullptr);
    if (result < 0 && result != -ETIME && result != -EINTR && result != -EBUSY)
        throw net::SystemError("io_uring_submit_and_wait_timeout", -result);

    // Copy the completions out and free the queue before handling them: handlers submit anew.
    // Completions the kernel kept aside while the queue was full (IORING_FEAT_NODROP) are moved
    // into it once it is empty and taken in this same round: none is lost or left waiting.
    io_uring_cqe* batch[kCqeBatch];
    for (bool flushed = false;;) {
        const unsigned count = io_uring_peek_batch_cqe(&ring_, batch, kCqeBatch);
        if (count == 0) {
            if (flushed || !(IO_URING_READ_ONCE(*ring_.sq.kflags) & IORING_SQ_CQ_OVERFLOW)) break;
            if (const int flush = io_uring_get_events(&ring_); flush < 0 && flush != -EINTR)
                throw net::SystemError("io_uring_get_events", -flush);
            flushed = true;
            continue;
        }
        flushed = false;
        for (unsigned i = 0; i < count; ++i) handle(*batch[i]);
        io_uring_cq_advance(&ring_, count);
    }
    const auto in_use = static_cast<uint32_t>(memory_.buffer_count() - free_buffers_.size() - offered_);
    peak_in_use_ = std::max(peak_in_use_, in_use);
    // Handlers may cancel, which completes parked receives into completions_: those go next round.
    handler.on_batch_start();
    delivering_.swap(completions_);
    for (const Completion& completion : delivering_) handler.on_completion(completion);
    delivering_.clear();
}

// The provided buffer a completion carries, if any: it has left the kernel's ring.
std::optional<uint16_t> UringEngine::take_buffer(const io_uring_cqe& cqe) {
    if (!(cqe.flags & IORING_CQE_F_BUFFER)) return std::nullopt;
    --offered_;
    return static_cast<uint16_t>(cqe.flags >> IORING_CQE_BUFFER_SHIFT);
}

// Turns one CQE into a Completion for the core, or deals with it inside the engine.
void UringEngine::handle(const io_uring_cqe& cqe) {
    if (cqe.user_data == kInternalRequest) return;
    if (cqe.user_data == kProbeRequest) {
        if (const auto buffer = take_buffer(cqe)) free_buffers_.push_back(*buffer);
        return;
    }
    if (cqe.user_data == kWakeRequest) {
        arm_wake_read();  // submitted with the next poll
        return;
    }
    const uint32_t index = static_cast<uint32_t>(cqe.user_data - 1);
    if (requests_[index].kind == Kind::Multishot) {
        on_multishot(index, cqe);
        return;
    }
    Request& request = requests_[index];
    Completion completion{request.user_data, cqe.res, false, false, 0};
    if (const auto buffer = take_buffer(cqe)) {
        completion.has_buffer = true;
        completion.buffer_id = *buffer;
    }
    if (request.kind == Kind::Recv && cqe.res == -ENOBUFS) {
        // The window was too small for this burst: it widens before the next round, and the
        // receive is retried once buffers are offered.
        short_of_buffers_ = true;
        parked_recvs_.push_back(index);
        return;
    }
    if (request.kind == Kind::Recv && cqe.res > 0)
        drained_by_fd_[static_cast<size_t>(request.fd)] = static_cast<uint32_t>(cqe.res) < request.length;
    completion.more = request.kind == Kind::Accept && (cqe.flags & IORING_CQE_F_MORE);
    if (!completion.more) release_request(index);
    completions_.push_back(completion);
}

// One completion of a multishot receive: it answers the core's waiting receive, or waits for the
// core's next one. Without IORING_CQE_F_MORE the multishot has ended (end of stream, an error,
// an empty buffer ring, a cancellation, or the kernel's own reasons) and is armed again when the
// core next asks.
void UringEngine::on_multishot(uint32_t index, const io_uring_cqe& cqe) {
    const int fd = requests_[index].fd;
    const bool more = (cqe.flags & IORING_CQE_F_MORE) != 0;
    Arrival arrival{cqe.res, false, 0};
    if (const auto buffer = take_buffer(cqe)) {
        arrival.has_buffer = true;
        arrival.buffer_id = *buffer;
    }
    if (requests_[index].orphaned) {
        if (arrival.has_buffer) free_buffers_.push_back(arrival.buffer_id);
        if (!more) release_request(index);
        return;
    }
    Stream& s = stream(fd);
    if (!more) {
        s.multishot = kNoRequest;
        s.cancelling = false;
        release_request(index);
    }
    if (cqe.res == -ENOBUFS) {  // armed again once buffers are offered, if the core still asks
        short_of_buffers_ = true;
        if (s.has_waiter) parked_streams_.push_back(fd);
        return;
    }
    if (cqe.res == -ECANCELED && !arrival.has_buffer) return;  // by cancel(): its waiter was answered there
    if (cqe.res > 0) drained_by_fd_[static_cast<size_t>(fd)] = static_cast<uint32_t>(cqe.res) < memory_.buffer_size();
    if (s.has_waiter) {
        s.has_waiter = false;
        completions_.push_back(Completion{s.waiter, arrival.result, false, arrival.has_buffer, arrival.buffer_id});
        return;
    }
    s.early.push_back(arrival);  // within the room the core had when the multishot was armed
}

}  // namespace ringlb::engine
