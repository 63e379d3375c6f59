#pragma once
// Background resolution of the names of dns server entries, with c-ares.
//
// c-ares rather than getaddrinfo() because it reports each record's TTL (so a name is
// re-resolved when its records expire, not on a fixed clock only) and takes the DNS servers to
// ask from the configuration ([global] resolvers) instead of from /etc/resolv.conf alone.
//
// c-ares runs its own poll loop over its sockets, so the Resolver runs it on a thread of its own:
// neither the workers nor the control thread ever wait for DNS. Each name is re-resolved after
// min(its interval, the shortest TTL of its answer), never sooner than 1 s after the last answer.
// A changed address set is queued for the owner (take_updates(), on the control thread) and
// `wake` is called so the owner does not wait for its next round. A failed resolution keeps the
// last good set (a DNS outage must not empty a rule) and is logged once per streak of failures.
#include <chrono>
#include <functional>
#include <memory>
#include <vector>

#include "ringlb/dns/expand.hpp"
#include "ringlb/net/address.hpp"
#include "ringlb/util/log.hpp"

namespace ringlb::dns {

// A name's new address set (sorted, without duplicates, never empty).
struct Update {
    Endpoint endpoint;
    std::vector<net::SocketAddress> addresses;
};

class Resolver {
public:
    struct Options {
        // The DNS servers to ask; empty = the system's (/etc/resolv.conf, and /etc/hosts first).
        std::vector<net::SocketAddress> servers;
        // Called from the resolver's thread after an update was queued; must be thread-safe.
        std::function<void()> wake;
        // No name is asked again sooner than this after an answer (TTL 0 or 1 would flood the server).
        std::chrono::milliseconds min_interval{std::chrono::seconds(1)};
    };

    // Sets up c-ares and starts the thread. Throws std::runtime_error naming what failed
    // (c-ares initialisation, a resolver address, the thread's wake-up descriptor).
    Resolver(Logger& log, Options options);
    // Stops the thread; queries in flight are abandoned.
    ~Resolver();
    Resolver(const Resolver&) = delete;
    Resolver& operator=(const Resolver&) = delete;

    // Replaces the names to resolve (thread-safe). New names are resolved at once; names still
    // listed keep their schedule and their last set; dropped names are forgotten.
    void set_targets(std::vector<Target> targets);
    // The sets that changed since the last call, one per name (the latest), in name order.
    std::vector<Update> take_updates();

private:
    class Loop;  // the thread's state: the c-ares channel and each name's schedule
    std::unique_ptr<Loop> loop_;
};

}  // namespace ringlb::dns
