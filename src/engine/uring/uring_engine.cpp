#include "ringlb/engine/uring/uring_engine.hpp"

#include <poll.h>
#include <sys/eventfd.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <optional>
#include <memory>
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

namespace {

std::shared_ptr<BufferBudget> budget_of(const EngineOptions& options) {
    if (options.budget) return options.budget;
    return std::make_shared<BufferBudget>(uint64_t{options.max_buffers} * options.buffer_size);
}

}  // namespace

UringEngine::UringEngine(const EngineOptions& options)
    : budget_(budget_of(options)),
      pool_(options.buffer_size, options.initial_buffers, options.max_buffers, *budget_),
      pipes_(options.max_pipes, options.pipe_capacity, options.pipe_descriptor_ceiling, options.refuse_splice),
      poll_fault_(options.fail_poll_after) {
    set_up_ring(options);
    try {
        set_up_buffer_ring();
        multishot_recv_ = options.multishot_recv && probe_capped_multishot();
        wake_fd_.reset(::eventfd(0, EFD_CLOEXEC));
        if (!wake_fd_) throw net::SystemError("eventfd", errno);
        arm_wake_read();
    } catch (...) {
        io_uring_queue_exit(&ring_);
        if (buffer_ring_) ::munmap(buffer_ring_, buffer_ring_bytes_);
        throw;
    }
    if (options.multishot_recv && !multishot_recv_) note_unavailable("capped-multishot-recv");
    features_ += " bufring=" + std::to_string(pool_.made()) + "x" + std::to_string(pool_.buffer_size()) +
                 "..." + std::to_string(pool_.max_count()) + " multishot-accept" +
                 (multishot_recv_ ? " multishot-recv" : "") + " recv-poll-first send-gather direct-shutdown";
    if (pipes_.enabled()) features_ += " splice(polled, " + std::to_string(pipes_.max_pipes()) + " pipes)";
    if (!unavailable_.empty()) features_ += "; unavailable here: " + unavailable_;
    features_ += std::string("; not used: ") + (options.multishot_recv ? "" : "multishot-recv (by configuration) ") +
                 (pipes_.enabled() ? "" : "splice (max_pipes = 0) ") + "recv-bundle send-zc op-splice";
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

// One provided-buffer ring with room for every buffer the pool may make (at most 32,768 at a
// time, the kernel's limit), of which only a window is filled.
void UringEngine::set_up_buffer_ring() {
    ring_entries_ = 1;
    while (ring_entries_ < pool_.max_count() && ring_entries_ < 32768) ring_entries_ *= 2;
    buffer_ring_bytes_ = ring_entries_ * sizeof(io_uring_buf);
    void* memory = ::mmap(nullptr, buffer_ring_bytes_, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (memory == MAP_FAILED) throw net::SystemError("mmap of the provided buffer ring", errno);
    buffer_ring_ = static_cast<io_uring_buf_ring*>(memory);
    io_uring_buf_ring_init(buffer_ring_);
    io_uring_buf_reg registration{};
    registration.ring_addr = reinterpret_cast<uint64_t>(buffer_ring_);
    registration.ring_entries = ring_entries_;
    registration.bgid = kBufferGroup;
    if (const int result = io_uring_register_buf_ring(&ring_, &registration, 0); result < 0) {
        ::munmap(buffer_ring_, buffer_ring_bytes_);
        buffer_ring_ = nullptr;
        throw_unavailable("registering a provided buffer ring", -result);
    }
    window_ = std::min(window_, ring_entries_);
    offer_buffers();
}

// Tops the kernel's ring up to the window with the warmest free buffers of the pool.
void UringEngine::offer_buffers() {
    const int mask = io_uring_buf_ring_mask(ring_entries_);
    int added = 0;
    while (offered_ < window_) {
        const auto id = pool_.take();
        if (!id) break;  // the pool is at its cap: receives wait for buffers to come back
        io_uring_buf_ring_add(buffer_ring_, pool_.data(*id), pool_.buffer_size(), *id, mask, added++);
        ++offered_;
    }
    if (added > 0) io_uring_buf_ring_advance(buffer_ring_, added);
}

BufferStats UringEngine::buffer_stats() const {
    return {pool_.in_use() - offered_, offered_, pool_.made(), pool_.resident_free()};
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
    prep_capped_multishot(sqe, reader.get(), pool_.buffer_size(), 2 * pool_.buffer_size());
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
    Request& request = requests_[index];
    request = Request{};
    request.user_data = user_data;
    request.fd = fd;
    request.length = length;
    request.kind = kind;
    request.serial = ++next_serial_;
    if (static_cast<size_t>(fd) >= live_by_fd_.size()) {
        std::array<uint32_t, 4> none;
        none.fill(kNoRequest);
        live_by_fd_.resize(static_cast<size_t>(fd) * 2 + 64, none);
        drained_by_fd_.resize(live_by_fd_.size(), false);
        slow_send_by_fd_.resize(live_by_fd_.size(), false);
        nonblocking_by_fd_.resize(live_by_fd_.size(), false);
    }
    for (uint32_t& slot : live_by_fd_[static_cast<size_t>(fd)]) {
        if (slot == kNoRequest) {
            slot = index;
            return index;
        }
    }
    throw std::logic_error("more than 4 requests in flight on fd " + std::to_string(fd));
}

bool UringEngine::has_live_requests(int fd) const {
    if (static_cast<size_t>(fd) >= live_by_fd_.size()) return false;
    const auto& live = live_by_fd_[static_cast<size_t>(fd)];
    return std::any_of(live.begin(), live.end(), [](uint32_t request) { return request != kNoRequest; });
}

void UringEngine::release_request(uint32_t index) {
    Request& request = requests_[index];
    for (uint32_t& slot : live_by_fd_[static_cast<size_t>(request.fd)])
        if (slot == index) slot = kNoRequest;
    if (request.gather != kNoGather) {
        gathers_.release(request.gather);
        request.gather = kNoGather;
    }
    const bool last_of_abandoned = request.orphaned && !has_live_requests(request.fd);
    request.parked = false;
    free_requests_.push_back(index);
    if (last_of_abandoned) finish_abandoned(request.fd);
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

void UringEngine::accept_one(int listen_fd, UserData user_data) {
    net::set_nonblocking(listen_fd, false);
    const uint32_t request = new_request(Kind::Accept, listen_fd, user_data);
    io_uring_sqe* sqe = next_sqe();
    io_uring_prep_accept(sqe, listen_fd, nullptr, nullptr, SOCK_CLOEXEC);
    io_uring_sqe_set_data64(sqe, request + 1);
}

void UringEngine::connect(int fd, const net::SocketAddress& to, UserData user_data) {
    const uint32_t request = new_request(Kind::Connect, fd, user_data);
    io_uring_sqe* sqe = next_sqe();
    io_uring_prep_connect(sqe, fd, to.sockaddr_ptr(), to.length());
    io_uring_sqe_set_data64(sqe, request + 1);
}

// With multishot receives, a socket keeps one receive armed while bytes keep coming, instead of
// one submission (and one poll armed and torn down in the kernel) per buffer. A room of one
// buffer or less gets a one-shot receive: receiving ahead would gain nothing there.
void UringEngine::recv(int fd, uint32_t max_bytes, UserData user_data) {
    const bool multishot = multishot_recv_ && max_bytes > pool_.buffer_size();
    const uint32_t request =
        new_request(Kind::Recv, fd, user_data, multishot ? max_bytes : std::min(max_bytes, pool_.buffer_size()));
    requests_[request].multishot = multishot;
    submit_recv(request);
}

void UringEngine::submit_recv(uint32_t request) {
    Request& r = requests_[request];
    r.parked = false;
    // A multishot whose remaining total fits one buffer is not worth keeping armed.
    if (r.multishot && r.length <= pool_.buffer_size()) r.multishot = false;
    io_uring_sqe* sqe = next_sqe();
    if (r.multishot) {
        prep_capped_multishot(sqe, r.fd, pool_.buffer_size(), r.length);
    } else {
        io_uring_prep_recv(sqe, r.fd, nullptr, r.length, 0);
        sqe->flags |= IOSQE_BUFFER_SELECT;
        sqe->buf_group = kBufferGroup;
    }
    if (drained_by_fd_[static_cast<size_t>(r.fd)]) sqe->ioprio |= IORING_RECVSEND_POLL_FIRST;
    io_uring_sqe_set_data64(sqe, request + 1);
}

void UringEngine::send_parts(int fd, std::span<const SendPart> parts, UserData user_data, bool fin_follows) {
    const uint32_t gather = parts.size() == 1 ? kNoGather : gathers_.store(parts);
    const uint32_t request = new_request(Kind::Send, fd, user_data);
    requests_[request].gather = gather;
    requests_[request].round = round_;
    if (fin_follows) ++final_sends_this_round_;
    if (!slow_send_by_fd_[static_cast<size_t>(fd)]) ++sends_this_round_;
    io_uring_sqe* sqe = next_sqe();
    const int flags = MSG_NOSIGNAL | (fin_follows ? MSG_MORE : 0);
    if (gather == kNoGather)
        io_uring_prep_send(sqe, fd, parts[0].data, parts[0].length, flags);
    else
        io_uring_prep_sendmsg(sqe, fd, gathers_.message(gather), static_cast<unsigned>(flags));
    io_uring_sqe_set_data64(sqe, request + 1);
}

void UringEngine::shutdown_write(int fd, UserData user_data) {
    // shutdown(2) never blocks: done here it saves a submission and a completion per direction
    // of every connection. The result is still delivered with the next poll(), never inline.
    const int result = ::shutdown(fd, SHUT_WR) == 0 ? 0 : -errno;
    completions_.push_back(Completion{user_data, result, false, false, 0});
}

// The splice path: the socket is tried at once (bytes are often there already, and a send rarely
// finds a full socket); only when it is not ready does a poll go into the ring.
void UringEngine::splice_in(int fd, uint32_t max_bytes, UserData user_data) {
    const uint32_t request = new_request(Kind::SpliceIn, fd, user_data, max_bytes);
    make_nonblocking(fd);
    if (!try_splice(request)) arm_poll(request);
}

void UringEngine::splice_out(uint16_t pipe, int fd, uint32_t length, UserData user_data) {
    const uint32_t request = new_request(Kind::SpliceOut, fd, user_data, length);
    requests_[request].pipe = pipe;
    make_nonblocking(fd);
    if (!try_splice(request)) arm_poll(request);
}

void UringEngine::make_nonblocking(int fd) {
    const auto index = static_cast<size_t>(fd);
    if (nonblocking_by_fd_[index]) return;
    net::set_nonblocking(fd, true);
    nonblocking_by_fd_[index] = true;
}

// Does the splice a request asks for. False when its socket is not ready (nothing was done);
// otherwise the completion goes out with the next poll() and the request is released.
bool UringEngine::try_splice(uint32_t index) {
    const Request& request = requests_[index];
    Completion completion{request.user_data, 0, false, false, 0};
    if (request.kind == Kind::SpliceIn) {
        const SpliceIn in = pipes_.fill_from(request.fd, request.length);
        if (in.outcome == SpliceIn::Outcome::WouldBlock) return false;
        completion.result = in.outcome == SpliceIn::Outcome::NoPipe ? -ENOBUFS : in.result;
        completion.has_pipe = in.outcome == SpliceIn::Outcome::Moved;
        completion.pipe_id = in.pipe;
    } else {
        completion.result = pipes_.drain_to(request.pipe, request.fd, request.length);
        if (completion.result == -EAGAIN) return false;
    }
    release_request(index);
    completions_.push_back(completion);
    return true;
}

void UringEngine::arm_poll(uint32_t index) {
    const Request& request = requests_[index];
    io_uring_sqe* sqe = next_sqe();
    io_uring_prep_poll_add(sqe, request.fd, request.kind == Kind::SpliceIn ? POLLIN | POLLRDHUP : POLLOUT);
    io_uring_sqe_set_data64(sqe, index + 1);
}

// Receives parked for want of a buffer are not in the kernel: they complete here. The others are
// cancelled in the kernel and marked, so that one the kernel answers with ENOBUFS (it found the
// ring empty before the cancel reached it) completes as cancelled instead of being parked.
void UringEngine::cancel(int fd) {
    if (static_cast<size_t>(fd) >= live_by_fd_.size()) return;
    for (const uint32_t request : live_by_fd_[static_cast<size_t>(fd)]) {
        if (request == kNoRequest) continue;
        Request& r = requests_[request];
        if (r.parked) {
            completions_.push_back(Completion{r.user_data, -ECANCELED, false, false, 0});
            release_request(request);
        } else if (!r.cancelled) {
            cancel_request(request);
        }
    }
}

void UringEngine::forget(int fd) {
    if (static_cast<size_t>(fd) < drained_by_fd_.size()) {
        drained_by_fd_[static_cast<size_t>(fd)] = false;
        slow_send_by_fd_[static_cast<size_t>(fd)] = false;
        nonblocking_by_fd_[static_cast<size_t>(fd)] = false;
    }
}

void UringEngine::abandon(net::UniqueFd fd, std::span<const uint16_t> held_buffers) {
    const int number = fd.get();
    forget(number);
    if (static_cast<size_t>(number) < live_by_fd_.size()) {
        for (const uint32_t request : live_by_fd_[static_cast<size_t>(number)]) {
            if (request == kNoRequest) continue;
            Request& r = requests_[request];
            r.orphaned = true;
            if (r.parked) {
                release_request(request);  // not in the kernel: nothing to wait for
            } else if (!r.cancelled) {
                cancel_request(request);
            }
        }
    }
    if (!has_live_requests(number)) {
        for (const uint16_t buffer : held_buffers) pool_.give(buffer);
        return;  // fd closes here
    }
    abandoned_.push_back(Abandoned{std::move(fd), {held_buffers.begin(), held_buffers.end()}});
}

// The last request of an abandoned descriptor has completed: its buffers are free and its
// number may be reused.
void UringEngine::finish_abandoned(int fd) {
    const auto entry = std::find_if(abandoned_.begin(), abandoned_.end(),
                                    [&](const Abandoned& a) { return a.fd.get() == fd; });
    if (entry == abandoned_.end()) return;
    for (const uint16_t buffer : entry->buffers) pool_.give(buffer);
    abandoned_.erase(entry);  // closes it
}

void UringEngine::cancel_request(uint32_t request) {
    requests_[request].cancelled = true;
    io_uring_sqe* sqe = next_sqe();
    io_uring_prep_cancel64(sqe, request + 1, 0);
    io_uring_sqe_set_data64(sqe, kInternalRequest);
}

void UringEngine::park(uint32_t request) {
    requests_[request].parked = true;
    parked_.push_back({request, requests_[request].serial});
}

// Retries the receives that found the buffer ring empty, oldest first, and no more of them than
// buffers were offered: each takes at least one, so retrying every one (a thousand sessions on a
// pool of 16) would mostly meet an empty ring again and cost a round trip through the kernel each.
void UringEngine::resubmit_parked_recvs() {
    uint32_t budget = offered_;
    while (!parked_.empty() && budget > 0) {
        const Parked entry = parked_.front();
        parked_.pop_front();
        const Request& r = requests_[entry.request];
        if (r.serial != entry.serial || !r.parked) continue;  // cancelled or abandoned meanwhile
        submit_recv(entry.request);
        --budget;
    }
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
void UringEngine::adjust_window(std::chrono::steady_clock::time_point now) {
    if (short_of_buffers_) {
        short_of_buffers_ = false;
        window_ = std::min(window_ * 2, ring_entries_);
    } else if (window_ <= kMinWindow || now - last_window_change_ < std::chrono::seconds(1)) {
        return;
    } else if (peak_held_ * 2 < window_) {
        window_ = std::max(window_ / 2, kMinWindow);
    }
    last_window_change_ = now;
    peak_held_ = 0;
}

// How many completions this round waits for, and how long. A round that follows a quiet one
// waits for the first completion, as long as the caller allows. A round that follows a busy one
// (two or more receives completed) waits for one completion more than that round had, plus one
// per send submitted with it to a socket whose last send completed at once (on a socket with
// room a send completes during the submission itself), but at most kBatchWindow: the worker then
// sleeps and is woken once per batch instead of once per completion, and submits and waits in one
// io_uring_enter instead of two. At most kMaxBatch in all: a worker that slept through more
// arrivals would take a provided buffer for each of them at once when it wakes (a burst of 2,000
// one-byte sessions made 2.5 KiB per session resident instead of 0.65). A quiet round never arms
// the short timer: on a virtual machine arming and cancelling it on every sleep cost more than it
// saved at one connection.
UringEngine::WaitPlan UringEngine::plan_wait(std::chrono::milliseconds timeout) const {
    if (!completions_.empty()) return {1, std::chrono::microseconds(0)};  // some are ready already
    const std::chrono::microseconds full = timeout;
    if (receives_last_round_ < 2 || plain_rounds_left_ > 0 || final_sends_this_round_ > 0) return {1, full};
    const unsigned arrivals = std::min(receives_last_round_ + 1, kMaxBatch);
    return {std::min(arrivals + sends_this_round_, kMaxBatch), std::min(full, kBatchWindow)};
}

// Where the completions asked for cannot come without the worker's own reaction (bulk streams,
// whose receives wait for room and whose sends wait for their readers), batches run into their
// window round after round. Each batch that came back short makes the next rounds wait for one
// completion, for twice as many rounds as the last time (up to kMaxBackOff); each full batch
// halves that. Request traffic, where a batch falls short now and then, keeps batching; a bulk
// transfer pays the window about once in thousands of rounds.
void UringEngine::note_batch_outcome(const WaitPlan& plan, unsigned harvested) {
    if (plain_rounds_left_ > 0) {
        --plain_rounds_left_;
        return;
    }
    if (plan.completions <= 1) return;
    if (harvested >= plan.completions) {
        back_off_span_ /= 2;
        return;
    }
    back_off_span_ = back_off_span_ == 0 ? 1 : std::min(back_off_span_ * 2, kMaxBackOff);
    plain_rounds_left_ = back_off_span_;
}

void UringEngine::poll(std::chrono::milliseconds timeout, CompletionHandler& handler) {
    if (poll_fault_.strikes()) throw net::SystemError("io_uring_submit_and_wait_timeout (RINGLB_FAULT)", EBADR);
    const auto now = std::chrono::steady_clock::now();
    pool_.tick(now);
    adjust_window(now);
    offer_buffers();
    if (!parked_.empty() && offered_ > 0) resubmit_parked_recvs();
    ++round_;
    const WaitPlan plan = plan_wait(timeout);
    __kernel_timespec wait{};
    wait.tv_sec = plan.timeout.count() / 1000000;
    wait.tv_nsec = (plan.timeout.count() % 1000000) * 1000;
    io_uring_cqe* first = nullptr;
    // Nothing to wait for (completions at hand, done inline: shutdowns, splices; a due timer; busy
    // polling): collect the kernel's without the timer a zero timeout would arm and fire.
    const int result = plan.timeout.count() == 0
                           ? io_uring_submit_and_get_events(&ring_)
                           : io_uring_submit_and_wait_timeout(&ring_, &first, plan.completions, &wait, nullptr);
    receives_last_round_ = 0;
    sends_this_round_ = 0;
    final_sends_this_round_ = 0;
    if (result < 0 && result != -ETIME && result != -EINTR && result != -EBUSY)
        throw net::SystemError("io_uring_submit_and_wait_timeout", -result);

    // Copy the completions out and free the queue before handling them: handlers submit anew.
    // Completions the kernel kept aside while the queue was full (IORING_FEAT_NODROP) are moved
    // into it once it is empty and taken in this same round: none is lost or left waiting.
    io_uring_cqe* batch[kCqeBatch];
    unsigned harvested = 0;
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
        harvested += count;
        io_uring_cq_advance(&ring_, count);
    }
    if (plan.timeout.count() != 0) note_batch_outcome(plan, harvested);  // a round that did not wait filled no batch
    peak_held_ = std::max(peak_held_, pool_.in_use() - offered_);
    // What the handlers' own requests completed at once (splices, shutdowns, cancelled parked
    // receives) is handed over in this same round, a few passes at most, instead of costing
    // another io_uring_enter each; the rest goes next round, so one busy stream cannot hold the
    // worker.
    handler.on_batch_start();
    for (unsigned pass = 0; pass < kDeliveryPasses && !completions_.empty(); ++pass) {
        delivering_.swap(completions_);
        for (const Completion& completion : delivering_) handler.on_completion(completion);
        delivering_.clear();
    }
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
        if (const auto buffer = take_buffer(cqe)) pool_.give(*buffer);
        return;
    }
    if (cqe.user_data == kWakeRequest) {
        arm_wake_read();  // submitted with the next poll
        return;
    }
    const auto index = static_cast<uint32_t>(cqe.user_data - 1);
    if (requests_[index].kind == Kind::Recv) {
        ++receives_last_round_;
        handle_recv(index, cqe);
        return;
    }
    if (requests_[index].kind == Kind::SpliceIn || requests_[index].kind == Kind::SpliceOut) {
        handle_poll(index, cqe);
        return;
    }
    Request& request = requests_[index];
    // Sends asked for in round N are submitted by round N + 1's io_uring_enter.
    if (request.kind == Kind::Send) slow_send_by_fd_[static_cast<size_t>(request.fd)] = round_ != request.round + 1;
    const bool more = request.kind == Kind::Accept && (cqe.flags & IORING_CQE_F_MORE);
    const Completion completion{request.user_data, cqe.res, more, false, 0};
    const bool orphaned = request.orphaned;
    if (!more) release_request(index);
    if (orphaned) {
        if (cqe.res >= 0 && request.kind == Kind::Accept) ::close(cqe.res);
        return;
    }
    completions_.push_back(completion);
}

// The socket of a splice request is ready (or the poll ended): splice now, or poll again after a
// wake-up that found nothing to do.
void UringEngine::handle_poll(uint32_t index, const io_uring_cqe& cqe) {
    const Request& request = requests_[index];
    if (request.orphaned) {
        release_request(index);
        return;
    }
    if (cqe.res < 0 || request.cancelled) {
        completions_.push_back(Completion{request.user_data, cqe.res < 0 ? cqe.res : -ECANCELED, false, false, 0});
        release_request(index);
        return;
    }
    if (!try_splice(index)) arm_poll(index);
}

// A receive's completion: bytes in a buffer, the end of the stream, an error, or ENOBUFS (the
// window was too small for this burst: it widens before the next round, and the receive is
// retried once buffers are offered, unless it was cancelled meanwhile).
void UringEngine::handle_recv(uint32_t index, const io_uring_cqe& cqe) {
    Request& request = requests_[index];
    const bool more = request.multishot && (cqe.flags & IORING_CQE_F_MORE);
    const auto buffer = take_buffer(cqe);
    if (request.orphaned) {
        if (buffer) pool_.give(*buffer);
        if (!more) release_request(index);
        return;
    }
    if (cqe.res == -ENOBUFS) {
        short_of_buffers_ = true;
        if (!request.cancelled) {
            park(index);
            return;
        }
    }
    Completion completion{request.user_data, cqe.res == -ENOBUFS ? -ECANCELED : cqe.res, more, false, 0};
    if (buffer) {
        completion.has_buffer = true;
        completion.buffer_id = *buffer;
    }
    if (cqe.res > 0) {
        const auto received = static_cast<uint32_t>(cqe.res);
        drained_by_fd_[static_cast<size_t>(request.fd)] = received < std::min(request.length, pool_.buffer_size());
        request.length -= std::min(request.length, received);
        request.delivery = static_cast<uint32_t>(completions_.size());
        request.delivery_round = round_;
    } else if (cqe.res == 0) {
        announce_end(request);
    }
    if (!more) release_request(index);
    completions_.push_back(completion);
}

// A multishot receive that finds the FIN behind the bytes it just delivered completes twice in
// the same round: the bytes, then the end. The bytes, not yet handed over, say that the end
// follows, so the core can send the FIN with them (Completion::end_follows).
void UringEngine::announce_end(const Request& request) {
    if (request.delivery_round != round_ || request.delivery >= completions_.size()) return;
    Completion& bytes = completions_[request.delivery];
    if (bytes.user_data == request.user_data && bytes.result > 0) bytes.end_follows = true;
}

}  // namespace ringlb::engine
