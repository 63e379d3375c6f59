#pragma once
// `[global] user`: bind as root (ports below 1024), then serve as an unprivileged user.
#include <stdexcept>
#include <string>

#include "ringlb/util/log.hpp"

namespace ringlb::app {

class PrivilegeError : public std::runtime_error {
public:
    using std::runtime_error::runtime_error;
};

// Switches the whole process (every thread) to `user` and its primary group, dropping
// supplementary groups. Running as root, anything short of a complete switch throws: ringlb must
// not go on serving as root when told not to. Not running as root, it only checks that the
// process already runs as that user (else a warning: nothing can be switched, nothing is gained).
void drop_privileges(const std::string& user, Logger& log);

// Throws PrivilegeError when this system has no user `user`: `--check` and the start find out
// before anything is bound.
void check_user_exists(const std::string& user);

}  // namespace ringlb::app
