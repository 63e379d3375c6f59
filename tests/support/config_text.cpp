#include "config_text.hpp"

#include <algorithm>
#include <sstream>

#include "net_util.hpp"

namespace ringlb::test {

namespace {

std::string quoted(std::string_view text) {
    std::string out;
    out.reserve(text.size() + 2);
    out += '"';
    out += text;
    out += '"';
    return out;
}

std::string render_server(const ServerSpec& server) {
    if (server.weight == 0 && !server.backup && server.max_connections == 0 && server.name.empty() &&
        server.source.empty())
        return quoted(server.address);
    return "{ address = " + quoted(server.address) + (server.name.empty() ? "" : ", name = " + quoted(server.name)) +
           (server.source.empty() ? "" : ", source = " + quoted(server.source)) +
           ", weight = " + std::to_string(server.weight == 0 ? 1 : server.weight) +
           (server.backup ? ", backup = true" : "") +
           (server.max_connections ? ", max_connections = " + std::to_string(server.max_connections) : "") + " }";
}

template <typename T, typename Render>
std::string render_array(const std::vector<T>& items, Render render) {
    std::string out = "[";
    for (std::size_t i = 0; i < items.size(); ++i) out += (i ? ", " : "") + render(items[i]);
    return out + "]";
}

}  // namespace

std::string render_config(const GlobalSpec& global, const std::vector<RuleSpec>& rules) {
    std::ostringstream out;
    out << "[global]\n"
        << "threads = " << global.threads << "\n"
        << "max_sessions_per_ip = " << global.max_sessions_per_ip << "\n"
        << "log_level = " << quoted(global.log_level) << "\n"
        << "shutdown_timeout = " << quoted(global.shutdown_timeout) << "\n";
    for (const auto& line : global.extra_lines) out << line << "\n";
    for (const auto& rule : rules) {
        out << "\n[[rule]]\n"
            << "id = " << quoted(rule.id) << "\n"
            << "mode = " << quoted(rule.mode) << "\n"
            << "listen = " << render_array(rule.listen, quoted) << "\n"
            << "timeout = " << quoted(rule.timeout) << "\n"
            << "connect_timeout = " << quoted(rule.connect_timeout) << "\n"
            << "servers = " << render_array(rule.servers, render_server) << "\n";
        for (const auto& line : rule.extra_lines) out << line << "\n";
    }
    if (!global.trailing_lines.empty()) out << "\n";
    for (const auto& line : global.trailing_lines) out << line << "\n";
    return out.str();
}

RuleSpec one_server_rule(const std::string& id, std::uint16_t port, const std::string& server) {
    RuleSpec spec;
    spec.id = id;
    spec.listen = {"127.0.0.1:" + std::to_string(port)};
    spec.servers = {{server}};
    return spec;
}

std::string simple_config(std::uint16_t listen_port, const std::vector<ServerSpec>& servers,
                          const GlobalSpec& global) {
    RuleSpec rule;
    rule.listen = {loopback_endpoint(listen_port)};
    rule.servers = servers;
    return render_config(global, {rule});
}

unsigned line_of(std::string_view text, std::string_view needle, unsigned occurrence) {
    std::size_t at = std::string_view::npos;
    std::size_t from = 0;
    for (unsigned i = 0; i < occurrence; ++i) {
        at = text.find(needle, from);
        if (at == std::string_view::npos) return 0;
        from = at + 1;
    }
    return 1 + static_cast<unsigned>(std::count(text.begin(), text.begin() + static_cast<std::ptrdiff_t>(at), '\n'));
}

}  // namespace ringlb::test
