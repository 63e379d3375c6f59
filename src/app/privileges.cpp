#include "ringlb/app/privileges.hpp"

#include <grp.h>
#include <pwd.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <vector>

namespace ringlb::app {

namespace {

struct Account {
    uid_t uid;
    gid_t gid;
};

Account look_up(const std::string& user) {
    long size = ::sysconf(_SC_GETPW_R_SIZE_MAX);
    std::vector<char> buffer(static_cast<size_t>(size > 0 ? size : 16384));
    passwd entry{};
    passwd* found = nullptr;
    const int error = ::getpwnam_r(user.c_str(), &entry, buffer.data(), buffer.size(), &found);
    if (found == nullptr)
        throw PrivilegeError("global.user: no user \"" + user + "\" on this system" +
                             (error != 0 ? std::string(": ") + std::strerror(error) : std::string()));
    return {entry.pw_uid, entry.pw_gid};
}

[[noreturn]] void fail(const std::string& user, const char* step) {
    throw PrivilegeError("global.user: cannot switch to \"" + user + "\": " + step + ": " + std::strerror(errno) +
                         "; refusing to serve as root");
}

}  // namespace

void check_user_exists(const std::string& user) { look_up(user); }

void drop_privileges(const std::string& user, Logger& log) {
    const Account account = look_up(user);
    if (::geteuid() != 0) {
        if (::geteuid() != account.uid)
            log.warn("global.user = \"", user, "\" ignored: not running as root, so already unprivileged (uid ",
                     ::geteuid(), ")");
        return;
    }
    if (::setgroups(1, &account.gid) != 0) fail(user, "setgroups");
    if (::setgid(account.gid) != 0) fail(user, "setgid");
    if (::setuid(account.uid) != 0) fail(user, "setuid");
    // A complete switch cannot be undone: check that it is.
    if (account.uid != 0 && (::setuid(0) == 0 || ::geteuid() == 0)) {
        errno = EPERM;
        fail(user, "root could be regained");
    }
    log.info("serving as user ", user, " (uid ", account.uid, ", gid ", account.gid, ")");
}

}  // namespace ringlb::app
