#pragma once
// What each end of every stream saw, and the rules that compare the two views at the end of the
// soak: a clean end must carry exactly the bytes the peer sent before its FIN, and a reset on one
// side must never turn into a clean end on the other.
#include <cstdint>
#include <map>
#include <mutex>
#include <optional>
#include <string>
#include <vector>

#include "soak_plan.hpp"

namespace ringlb::soak {

enum class StreamEnd : std::uint8_t { Open, CleanEof, Reset };

// The client's view of one stream.
struct ClientRecord {
    StreamPlan plan;
    bool connected = false;
    bool connect_failed = false;
    int connect_error = 0;  // errno of a failed connect
    std::uint16_t local_port = 0;  // finds the stream in ringlb's connection log
    std::uint64_t sent = 0;  // stream bytes handed to the kernel, header excluded
    bool sent_fin = false;
    bool reset_by_client = false;  // the plan's own RST
    bool send_failed = false;      // EPIPE/ECONNRESET while sending
    std::uint64_t received = 0;    // verified down bytes
    StreamEnd down_end = StreamEnd::Open;
    std::optional<std::uint64_t> mismatch;  // offset of the first wrong down byte
    bool hung = false;                      // still open at the stream deadline
};

// A backend's view of one stream (known once its header arrived).
struct BackendRecord {
    StreamPlan plan;
    std::uint64_t received = 0;  // verified up bytes
    StreamEnd up_end = StreamEnd::Open;
    std::uint64_t sent = 0;
    bool sent_fin = false;
    bool reset_by_backend = false;  // the plan's own RST
    bool send_failed = false;
    bool peer_reset = false;  // its connection ended by a reset or error from ringlb's side
    bool killed = false;  // its backend was killed while the stream was open
    std::optional<std::uint64_t> mismatch;
};

// A backend connection that ended before a whole header arrived.
struct AnonymousRecord {
    std::size_t header_bytes = 0;
    StreamEnd end = StreamEnd::Open;
    bool bad_magic = false;
};

struct SoakTotals {
    std::uint64_t streams = 0;
    std::uint64_t completed = 0;        // both directions ended with FIN, byte-exact
    std::uint64_t completed_early = 0;  // ... of which the server half-closed mid-stream by plan
    std::uint64_t resets = 0;           // a RST on either side
    std::uint64_t resets_by_client = 0, resets_by_server = 0, resets_by_kill = 0, resets_by_stall = 0, resets_other = 0;
    std::uint64_t unserved = 0;  // closed before reaching a backend (idle blackhole, no server left)
    std::uint64_t stalled = 0;       // planned to stall past the idle timeout, served by a backend
    std::uint64_t stalls_cut = 0;    // ... and cut by ringlb: a reset at both ends
    std::vector<std::uint16_t> stall_cut_ports;  // their clients' ports, to find them in ringlb's log
    std::uint64_t bytes_up = 0, bytes_down = 0;  // verified at the receiving end
    std::uint64_t anonymous = 0;
    std::vector<std::string> violations;
};

class Ledger {
public:
    void record_client(const ClientRecord& record);
    void record_backend(const BackendRecord& record);
    void record_anonymous(const AnonymousRecord& record);

    // Compares both views of every stream; call after all clients and backends have stopped.
    SoakTotals judge() const;

private:
    void judge_client(const ClientRecord& client, const BackendRecord* backend, SoakTotals& totals) const;
    void judge_backend(const BackendRecord& backend, const ClientRecord* client, SoakTotals& totals) const;
    static void judge_stall(const ClientRecord& client, const BackendRecord* backend, SoakTotals& totals);
    static void classify(const ClientRecord& client, const BackendRecord* backend, SoakTotals& totals);

    mutable std::mutex mutex_;
    std::map<std::uint64_t, ClientRecord> clients_;
    std::map<std::uint64_t, BackendRecord> backends_;
    std::vector<std::uint64_t> duplicate_backend_ids_;
    std::vector<AnonymousRecord> anonymous_;
};

}  // namespace ringlb::soak
