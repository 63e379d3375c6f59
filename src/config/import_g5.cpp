// Import of G5 configs into ringlb TOML (see import_g5.hpp).
//
// Mapping decisions:
// - A forwarding rule becomes a [[rule]] with id, mode (the G5 code in lower case: ms, rr, lc,
//   rt, rd, hs), listen, servers, clients and, from ( timeout N ), timeout = "Ns". A rule without
//   ( timeout ) (or with 0) never times out in G5: it gets timeout = "0", ringlb's "no idle
//   timeout", rather than ringlb's default. ringlb's defaults cover what G5 had no setting for
//   (connect_timeout, down_time, retries, ...).
// - Client patterns are kept as written: ringlb matches G5 wildcards ('*', '?', an optional
//   ":port" glob) the same way, whereas turning them into CIDR blocks would change the meaning
//   of patterns such as "10.1*" that do not stop at an octet boundary. "*" and "*:*" match every
//   client, so `clients` is left out (ringlb's default) when one of them is present.
// - ( maxclients N ) caps the sessions of one client pattern in G5, but ringlb's max_clients
//   caps a whole rule. A rule in which at most one pattern carries a limit and that pattern is
//   the only one maps to one [[rule]] with max_clients = N. Any other rule with limits is split,
//   in pattern order, into one [[rule]] per pattern with a limit and one per run of consecutive
//   patterns without, with ids "<id>.1", "<id>.2", ... and a comment above saying why. This
//   keeps every limit exactly where G5 applied it and keeps first-match order (a client over a
//   rule's limit is closed, not passed on, as in G5). Giving the whole rule the smallest limit
//   would be simpler but would let the clients of one pattern use up another pattern's share.
//   The cost: the split rules balance (and notice dead servers) each on their own.
//   maxclients 0 means no limit, as it does in ringlb.
// - ( maxsessions_per_ip N ) becomes [global] max_sessions_per_ip = N.
// - The G rule (management port) becomes [admin] with listen = its first listen address
//   (ringlb's admin port has one; the others are named in a comment) and allow = its client
//   patterns as written. G5's port had no authentication; ringlb refuses an admin listener
//   outside loopback without a token, so such a listener gets insecure = true and a comment
//   telling the operator to set a token instead. More than one G rule is an error. G5's own
//   examples put ( timeout N ) and ( maxclients N ) on the G rule; ringlb's admin port has fixed
//   limits of its own (idle connections closed after 5 minutes, 64 connections), so these are
//   dropped with a comment saying so.
// - Everything else ringlb cannot express faithfully is an error naming line and column:
//   unknown modes and options, malformed rules, bad addresses or patterns, servers on the G
//   rule, duplicate or invalid ids, a config without forwarding rules. Every problem
//   is collected before ConfigError is thrown. G5's comments are not carried over.
#include "ringlb/config/import_g5.hpp"

#include <algorithm>
#include <cctype>
#include <charconv>
#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <vector>

#include "ringlb/net/address.hpp"
#include "ringlb/net/client_pattern.hpp"
#include "ringlb/util/text.hpp"

namespace ringlb::config {
namespace {

constexpr uint64_t kMaxLimit = 10'000'000;          // ringlb's bound for max_clients and max_sessions_per_ip
constexpr uint64_t kMaxTimeoutSeconds = 2147483647;  // G5 keeps the timeout in an int
constexpr size_t kMaxRuleIdLength = 64;              // as ringlb's loader requires

std::string lowercase(std::string_view text) {
    std::string out(text);
    std::transform(out.begin(), out.end(), out.begin(), [](unsigned char c) { return std::tolower(c); });
    return out;
}

// G5 text echoed in a message, its control characters escaped.
std::string quoted(std::string_view text) { return "'" + escaped(text) + "'"; }

// ---- tokens ----

enum class TokenKind { Word, Open, Close, Semicolon, Dash, Arrow, End };

struct Token {
    TokenKind kind = TokenKind::End;
    std::string_view text;
    unsigned line = 1;
    unsigned column = 1;
};

// '-' separates client patterns from listen addresses and may touch them ("*:*-0.0.0.0:80"),
// but rule ids may contain it ("web-1"); the parser says which reading applies where.
enum class DashRole { Separator, PartOfWord };

// Splits G5 text into words and the punctuation ( ) ; - >, skipping whitespace (newlines too:
// a rule runs until its ';') and '#' comments. A value type, so that peeking is copying.
class Lexer {
public:
    explicit Lexer(std::string_view text) : text_(text) {}

    Token next(DashRole dash) {
        skip_blanks_and_comments();
        Token token{TokenKind::End, {}, line_, column_};
        if (at_end()) return token;
        const size_t start = offset_;
        token.kind = kind_of(text_[offset_], dash);
        if (token.kind == TokenKind::Word) {
            while (!at_end() && !ends_word(text_[offset_], dash)) advance();
        } else {
            advance();
        }
        token.text = text_.substr(start, offset_ - start);
        return token;
    }

    Token peek(DashRole dash) const {
        Lexer ahead = *this;
        return ahead.next(dash);
    }

private:
    static TokenKind kind_of(char c, DashRole dash) {
        switch (c) {
            case '(': return TokenKind::Open;
            case ')': return TokenKind::Close;
            case ';': return TokenKind::Semicolon;
            case '>': return TokenKind::Arrow;
            case '-': return dash == DashRole::Separator ? TokenKind::Dash : TokenKind::Word;
            default: return TokenKind::Word;
        }
    }

    static bool ends_word(char c, DashRole dash) {
        return std::isspace(static_cast<unsigned char>(c)) || c == '#' || kind_of(c, dash) != TokenKind::Word;
    }

    bool at_end() const { return offset_ >= text_.size(); }

    void advance() {
        if (text_[offset_] == '\n') {
            ++line_;
            column_ = 1;
        } else {
            ++column_;
        }
        ++offset_;
    }

    void skip_blanks_and_comments() {
        while (!at_end()) {
            if (text_[offset_] == '#') {
                while (!at_end() && text_[offset_] != '\n') advance();
            } else if (std::isspace(static_cast<unsigned char>(text_[offset_]))) {
                advance();
            } else {
                return;
            }
        }
    }

    std::string_view text_;
    size_t offset_ = 0;
    unsigned line_ = 1;
    unsigned column_ = 1;
};

std::string describe(const Token& token) {
    return token.kind == TokenKind::End ? "the end of the file" : quoted(token.text);
}

// The lower-case G5 mode code, or nullopt for a word that is no G5 mode.
std::optional<std::string> mode_code(std::string_view word) {
    const std::string code = lowercase(word);
    for (const char* known : {"g", "ms", "rr", "lc", "rt", "rd", "hs"})
        if (code == known) return code;
    return std::nullopt;
}

bool valid_rule_id(std::string_view id) {
    return !id.empty() && id.size() <= kMaxRuleIdLength && std::all_of(id.begin(), id.end(), [](unsigned char c) {
        return std::isalnum(c) || c == '_' || c == '.' || c == '-';
    });
}

// ---- what a G5 file says ----

struct G5Pattern {
    std::string text;
    std::optional<uint32_t> max_clients;  // ( maxclients N ) after it; 0 = no limit
    bool matches_everyone() const { return text == "*" || text == "*:*"; }
    bool limited() const { return max_clients.value_or(0) > 0; }
};

struct G5Rule {
    std::string id;
    std::string mode;  // lower-case code; empty when the mode word was not understood
    unsigned line = 0;  // where its id is
    unsigned column = 0;
    std::optional<uint32_t> timeout_seconds;
    std::vector<G5Pattern> clients;
    std::vector<net::SocketAddress> listen;
    std::vector<net::SocketAddress> servers;
    std::vector<std::string> dropped;  // G rule: the options [admin] cannot express, as written
    bool is_management() const { return mode == "g"; }
};

struct G5Config {
    std::optional<uint32_t> max_sessions_per_ip;
    std::vector<G5Rule> rules;  // the G rule included, in file order
};

// Reads the whole G5 text, collecting every problem. A malformed token ends the statement it
// is in (the rest, up to ';', is skipped) so that later rules are still checked.
class G5Parser {
public:
    G5Parser(std::string_view text, std::string file) : lexer_(text), file_(std::move(file)) {}

    G5Config run() {
        while (lexer_.peek(DashRole::PartOfWord).kind != TokenKind::End) {
            try {
                parse_statement();
            } catch (const Abandon& abandon) {
                if (!abandon.statement_ended) skip_past_semicolon();
            }
        }
        // Said only of an otherwise clean file: after other errors it is likely their echo.
        if (forwarding_rules_seen_ == 0 && issues_.empty())
            report_at(0, 0, "", "no forwarding rule (only a G rule, or nothing at all)");
        return std::move(config_);
    }

    std::vector<ConfigIssue> take_issues() { return std::move(issues_); }

private:
    // Thrown once a statement cannot be read further; statement_ended = its ';' (or the end of
    // the file) has already been consumed, so there is nothing to skip.
    struct Abandon {
        bool statement_ended;
    };

    struct Option {
        Token keyword;
        Token value;
    };

    void report_at(unsigned line, unsigned column, std::string key, std::string message) {
        issues_.push_back({file_, line, column, std::move(key), std::move(message)});
    }

    void report(const Token& where, std::string key, std::string message) {
        report_at(where.line, where.column, std::move(key), std::move(message));
    }

    [[noreturn]] void unexpected(const Token& token, const std::string& key, std::string_view expected) {
        report(token, key, "expected " + std::string(expected) + ", found " + describe(token));
        throw Abandon{token.kind == TokenKind::Semicolon || token.kind == TokenKind::End};
    }

    void skip_past_semicolon() {
        for (;;) {
            const TokenKind kind = lexer_.next(DashRole::PartOfWord).kind;
            if (kind == TokenKind::Semicolon || kind == TokenKind::End) return;
        }
    }

    // The next token of a rule; the end of the file there means its ';' is missing.
    Token next_in_rule(const G5Rule& rule, DashRole dash) {
        const Token token = lexer_.next(dash);
        if (token.kind != TokenKind::End) return token;
        report_at(rule.line, rule.column, rule.id, "rule " + quoted(rule.id) + " does not end with ';' (the file ends first)");
        throw Abandon{true};
    }

    // A forgotten ';' makes the next rule's "id MODE" look like more addresses: recognise it so
    // that the message names the real mistake.
    bool next_rule_starts_here() const {
        Lexer ahead = lexer_;
        const Token id = ahead.next(DashRole::PartOfWord);
        const Token mode = ahead.next(DashRole::Separator);
        return id.kind == TokenKind::Word && !net::SocketAddress::parse(id.text) && mode.kind == TokenKind::Word &&
               mode_code(mode.text).has_value();
    }

    [[noreturn]] void missing_semicolon_before_next_rule(const G5Rule& rule) {
        const Token next = lexer_.peek(DashRole::PartOfWord);
        report(next, rule.id,
               "missing ';' after rule " + quoted(rule.id) + " (line " + std::to_string(rule.line) + ") before rule " +
                   quoted(next.text));
        throw Abandon{true};
    }

    std::optional<uint32_t> parse_number(const Token& token, const std::string& key, uint64_t min, uint64_t max) {
        uint64_t value = 0;
        const char* end = token.text.data() + token.text.size();
        const auto [stop, error] = std::from_chars(token.text.data(), end, value);
        if (token.kind != TokenKind::Word || error != std::errc() || stop != end || value < min || value > max) {
            report(token, key,
                   "expected a whole number from " + std::to_string(min) + " to " + std::to_string(max) + ", found " +
                       describe(token));
            return std::nullopt;
        }
        return static_cast<uint32_t>(value);
    }

    // ---- statements ----

    void parse_statement() {
        const Token first = lexer_.peek(DashRole::PartOfWord);
        if (first.kind == TokenKind::Open) return parse_global();
        if (first.kind == TokenKind::Word) return parse_rule();
        lexer_.next(DashRole::PartOfWord);
        if (first.kind == TokenKind::Semicolon) return;  // an empty statement is harmless
        unexpected(first, "", "a rule id or ( maxsessions_per_ip N )");
    }

    // "( maxsessions_per_ip N )", optionally followed by ';'.
    void parse_global() {
        lexer_.next(DashRole::Separator);  // '('
        const Option option = parse_option(nullptr);
        const std::string key = lowercase(option.keyword.text);
        if (key != "maxsessions_per_ip") {
            report(option.keyword, key, "unknown global setting " + quoted(option.keyword.text) +
                                            " (G5 knows ( maxsessions_per_ip N ))");
        } else if (config_.max_sessions_per_ip) {
            report(option.keyword, key, "maxsessions_per_ip is set twice");
        } else {
            config_.max_sessions_per_ip = parse_number(option.value, key, 0, kMaxLimit);
        }
        if (lexer_.peek(DashRole::Separator).kind == TokenKind::Semicolon) lexer_.next(DashRole::Separator);
    }

    // "keyword N )" after an already consumed '('; `rule` is null for the global setting.
    Option parse_option(const G5Rule* rule) {
        auto next = [&] { return rule ? next_in_rule(*rule, DashRole::Separator) : lexer_.next(DashRole::Separator); };
        const std::string key = rule ? rule->id : "";
        Option option;
        option.keyword = next();
        if (option.keyword.kind != TokenKind::Word) unexpected(option.keyword, key, "a setting name after '('");
        option.value = next();
        if (option.value.kind != TokenKind::Word) unexpected(option.value, key, "a number after " + quoted(option.keyword.text));
        const Token close = next();
        if (close.kind != TokenKind::Close) unexpected(close, key, "')'");
        return option;
    }

    void parse_rule() {
        G5Rule rule;
        const Token id = lexer_.next(DashRole::PartOfWord);
        rule.id = std::string(id.text);
        rule.line = id.line;
        rule.column = id.column;
        check_rule_id(id);
        parse_mode(rule);
        parse_clients(rule);
        if (parse_listen(rule) == TokenKind::Arrow) parse_servers(rule);
        config_.rules.push_back(std::move(rule));
    }

    void check_rule_id(const Token& id) {
        const std::string text(id.text);
        if (!valid_rule_id(text))
            report(id, text, "rule id " + quoted(text) + " is not usable in ringlb (1-64 characters of A-Z a-z 0-9 _ . -)");
        const auto [first, inserted] = rule_lines_.emplace(text, id.line);
        if (!inserted)
            report(id, text, "duplicate rule id " + quoted(text) + " (first defined at line " + std::to_string(first->second) + ")");
    }

    void parse_mode(G5Rule& rule) {
        const Token word = next_in_rule(rule, DashRole::Separator);
        if (word.kind != TokenKind::Word) unexpected(word, rule.id, "a mode (G, MS, RR, LC, RT, RD or HS)");
        const auto code = mode_code(word.text);
        if (!code) {
            // Not fatal: the rest of the rule can still be checked.
            report(word, rule.id, "unknown mode " + quoted(word.text) + " (G5 modes: G, MS, RR, LC, RT, RD, HS)");
            ++forwarding_rules_seen_;
            return;
        }
        rule.mode = *code;
        if (!rule.is_management()) {
            ++forwarding_rules_seen_;
        } else if (management_line_ != 0) {
            report(word, rule.id, "a second G rule (the first is at line " + std::to_string(management_line_) +
                                      "): ringlb has one management port, [admin]");
        } else {
            management_line_ = rule.line;
        }
    }

    // Client patterns, ( timeout N ) and ( maxclients N ), up to and including the '-'.
    void parse_clients(G5Rule& rule) {
        for (;;) {
            const Token token = next_in_rule(rule, DashRole::Separator);
            switch (token.kind) {
                case TokenKind::Word: add_client_pattern(rule, token); break;
                case TokenKind::Open: apply_rule_option(rule, parse_option(&rule)); break;
                case TokenKind::Dash:
                    if (rule.clients.empty()) report(token, rule.id, "no client pattern before '-' (*:* means any client)");
                    return;
                case TokenKind::Arrow:
                case TokenKind::Semicolon:
                    report(token, rule.id, "missing '-' between the client patterns and the listen addresses");
                    throw Abandon{token.kind == TokenKind::Semicolon};
                default: unexpected(token, rule.id, "a client pattern, '(' or '-'");
            }
        }
    }

    void add_client_pattern(G5Rule& rule, const Token& token) {
        std::string error;
        if (!net::ClientPattern::parse(token.text, &error)) report(token, rule.id, "bad " + error);
        rule.clients.push_back({std::string(token.text), std::nullopt});
    }

    void apply_rule_option(G5Rule& rule, const Option& option) {
        const std::string name = lowercase(option.keyword.text);
        if (name == "timeout") return apply_timeout(rule, option);
        if (name == "maxclients") return apply_max_clients(rule, option);
        report(option.keyword, rule.id,
               "unknown option " + quoted(option.keyword.text) + " (G5 rules take ( timeout N ) and ( maxclients N ))");
    }

    void apply_timeout(G5Rule& rule, const Option& option) {
        if (rule.timeout_seconds) return report(option.keyword, rule.id, "timeout is set twice in this rule");
        rule.timeout_seconds = parse_number(option.value, rule.id, 0, kMaxTimeoutSeconds);  // 0: none
        if (rule.is_management() && rule.timeout_seconds)
            rule.dropped.push_back("( timeout " + std::to_string(*rule.timeout_seconds) + " )");
    }

    void apply_max_clients(G5Rule& rule, const Option& option) {
        if (rule.clients.empty())
            return report(option.keyword, rule.id, "( maxclients N ) must follow the client pattern it limits");
        G5Pattern& pattern = rule.clients.back();
        if (pattern.max_clients)
            return report(option.keyword, rule.id, "maxclients is set twice for " + quoted(pattern.text));
        pattern.max_clients = parse_number(option.value, rule.id, 0, kMaxLimit);
        if (rule.is_management() && pattern.max_clients)
            rule.dropped.push_back("( maxclients " + std::to_string(*pattern.max_clients) + " ) after " + pattern.text);
    }

    // Listen addresses up to the '>' or, for a G rule, the ';'; returns which of the two ended them.
    TokenKind parse_listen(G5Rule& rule) {
        for (size_t words = 0;; ++words) {
            if (words > 0 && next_rule_starts_here()) missing_semicolon_before_next_rule(rule);
            const Token token = next_in_rule(rule, DashRole::Separator);
            if (token.kind == TokenKind::Word) {
                add_listen_address(rule, token);
                continue;
            }
            if (token.kind != TokenKind::Arrow && token.kind != TokenKind::Semicolon)
                unexpected(token, rule.id, "a listen address, '>' or ';'");
            if (words == 0) report(token, rule.id, "no listen address after '-'");
            if (token.kind == TokenKind::Semicolon && !rule.is_management())
                report(token, rule.id, "missing '>' and the server addresses after the listen addresses");
            return token.kind;
        }
    }

    void add_listen_address(G5Rule& rule, const Token& token) {
        const auto address = parse_address(rule, token, "listen");
        if (!address) return;
        if (std::find(rule.listen.begin(), rule.listen.end(), *address) != rule.listen.end())
            return report(token, rule.id, "listen address " + address->to_string() + " appears twice in this rule");
        rule.listen.push_back(*address);
    }

    // Server addresses up to the ';'.
    void parse_servers(G5Rule& rule) {
        for (size_t words = 0;; ++words) {
            if (words > 0 && next_rule_starts_here()) missing_semicolon_before_next_rule(rule);
            const Token token = next_in_rule(rule, DashRole::PartOfWord);
            if (token.kind == TokenKind::Semicolon) {
                if (words == 0 && !rule.is_management()) report(token, rule.id, "no server address after '>'");
                return;
            }
            if (token.kind != TokenKind::Word) unexpected(token, rule.id, "a server address or ';'");
            if (rule.is_management() && words == 0)
                report(token, rule.id, "a G rule (management port) takes no servers");
            if (const auto address = parse_address(rule, token, "server")) rule.servers.push_back(*address);
        }
    }

    std::optional<net::SocketAddress> parse_address(const G5Rule& rule, const Token& token, std::string_view role) {
        if (auto address = net::SocketAddress::parse(token.text)) return address;
        report(token, rule.id,
               "bad " + std::string(role) + " address " + quoted(token.text) + ": " +
                   net::SocketAddress::parse_error(token.text));
        return std::nullopt;
    }

    Lexer lexer_;
    std::string file_;
    G5Config config_;
    std::vector<ConfigIssue> issues_;
    std::map<std::string, unsigned> rule_lines_;  // rule id -> line of its first definition
    unsigned management_line_ = 0;                 // line of the G rule; 0 = none yet
    unsigned forwarding_rules_seen_ = 0;
};

// ---- the ringlb rules to write ----

// One [[rule]] to write: a whole G5 rule, or one part of a rule split for its maxclients.
struct PlannedRule {
    std::string id;
    const G5Rule* source = nullptr;
    std::vector<std::string> clients;  // empty = any client
    uint32_t max_clients = 0;
    bool first_of_split = false;  // carries the comment explaining the split
    size_t parts = 1;             // how many rules the G5 rule became
};

struct ClientGroup {
    std::vector<const G5Pattern*> patterns;
    uint32_t max_clients = 0;
};

// Each limited pattern alone, consecutive unlimited ones together, in G5's order.
std::vector<ClientGroup> group_by_limit(const std::vector<G5Pattern>& patterns) {
    std::vector<ClientGroup> groups;
    for (const G5Pattern& pattern : patterns) {
        const bool join_previous = !pattern.limited() && !groups.empty() && groups.back().max_clients == 0;
        if (!join_previous) groups.emplace_back();
        groups.back().patterns.push_back(&pattern);
        if (pattern.limited()) groups.back().max_clients = *pattern.max_clients;
    }
    return groups;
}

std::vector<std::string> client_texts(const ClientGroup& group) {
    const bool everyone = std::any_of(group.patterns.begin(), group.patterns.end(),
                                      [](const G5Pattern* pattern) { return pattern->matches_everyone(); });
    std::vector<std::string> texts;
    if (everyone) return texts;  // ringlb's default `clients` is any client
    for (const G5Pattern* pattern : group.patterns) texts.push_back(pattern->text);
    return texts;
}

std::vector<PlannedRule> plan_rules(const G5Config& config) {
    std::vector<PlannedRule> planned;
    for (const G5Rule& rule : config.rules) {
        if (rule.is_management()) continue;
        const std::vector<ClientGroup> groups = group_by_limit(rule.clients);
        for (size_t i = 0; i < groups.size(); ++i) {
            PlannedRule part;
            part.id = groups.size() == 1 ? rule.id : rule.id + "." + std::to_string(i + 1);
            part.source = &rule;
            part.clients = client_texts(groups[i]);
            part.max_clients = groups[i].max_clients;
            part.first_of_split = groups.size() > 1 && i == 0;
            part.parts = groups.size();
            planned.push_back(std::move(part));
        }
    }
    return planned;
}

// Split rules get new ids, which must still be valid and must not clash with any other id.
void check_split_ids(const G5Config& config, const std::vector<PlannedRule>& planned, const std::string& file,
                     std::vector<ConfigIssue>& issues) {
    std::map<std::string, unsigned> taken;  // id -> line of the G5 rule that has (or made) it
    for (const G5Rule& rule : config.rules) taken.emplace(rule.id, rule.line);
    for (const PlannedRule& part : planned) {
        // An invalid G5 id has been reported already; its parts would only repeat that.
        if (part.parts == 1 || !valid_rule_id(part.source->id)) continue;
        std::string problem;
        if (part.id.size() > kMaxRuleIdLength) problem = "is longer than 64 characters";
        else if (const auto [first, inserted] = taken.emplace(part.id, part.source->line); !inserted)
            problem = "is already the id of the rule at line " + std::to_string(first->second);
        if (!problem.empty())
            issues.push_back({file, part.source->line, 1, part.source->id,
                              "rule " + quoted(part.source->id) + " is split for its maxclients, but the new id " +
                                  quoted(part.id) + " " + problem + ": rename the rule"});
    }
}

// ---- TOML text ----

// A TOML basic string: quotes, backslashes and every control character escaped (\uXXXX).
std::string toml_string(std::string_view text) { return "\"" + escaped(text) + "\""; }

template <typename Items, typename ToText>
std::string toml_array(const Items& items, ToText to_text) {
    std::string out = "[";
    for (const auto& item : items) {
        if (out.size() > 1) out += ", ";
        out += toml_string(to_text(item));
    }
    return out + "]";
}

std::string address_text(const net::SocketAddress& address) { return address.to_string(); }

// A name that fits on one comment line whatever the caller passed.
std::string printable(std::string_view text) {
    std::string out(text);
    std::replace_if(out.begin(), out.end(), [](unsigned char c) { return std::iscntrl(c); }, '?');
    return out;
}

// Decided as ringlb's loader decides whether an admin listener needs a token: 127.0.0.0/8
// (IPv4-mapped too) and ::1.
bool is_loopback(const net::SocketAddress& address) {
    for (const char* loopback : {"127.0.0.0/8", "::1"})
        if (net::ClientPattern::parse(loopback)->matches(address)) return true;
    return false;
}

std::string render_global(const G5Config& config) {
    if (!config.max_sessions_per_ip) return "";
    return "\n[global]\nmax_sessions_per_ip = " + std::to_string(*config.max_sessions_per_ip) + "\n";
}

std::string render_admin(const G5Rule& rule) {
    std::string out = "\n# The management port (G5 rule " + quoted(rule.id) + ", line " + std::to_string(rule.line) + ").\n";
    for (const std::string& option : rule.dropped)
        out += "# G5's " + option + " is dropped: ringlb's admin port closes connections idle for 5 minutes\n"
               "# and takes 64 connections at most.\n";
    out += "[admin]\n";
    if (rule.listen.size() > 1) {
        std::vector<net::SocketAddress> dropped(rule.listen.begin() + 1, rule.listen.end());
        out += "# G5 also listened on " + toml_array(dropped, address_text) + ": ringlb's [admin] takes one address.\n";
    }
    out += "listen = " + toml_string(rule.listen.front().to_string()) + "\n";
    out += "allow = " + toml_array(rule.clients, [](const G5Pattern& pattern) { return pattern.text; }) + "\n";
    if (!is_loopback(rule.listen.front())) {
        out += "# G5's management port had no password. Set token = \"<secret>\" here and remove\n";
        out += "# insecure = true: without a token anyone allowed above can change the rules.\n";
        out += "insecure = true\n";
    }
    return out;
}

std::string render_rule(const PlannedRule& part) {
    const G5Rule& rule = *part.source;
    std::string out = "\n";
    if (part.first_of_split)
        out += "# G5 rule " + quoted(rule.id) + " (line " + std::to_string(rule.line) + ") is split into " +
               std::to_string(part.parts) + " rules: G5 counts maxclients per client pattern,\n" +
               "# ringlb counts max_clients per rule.\n";
    out += "[[rule]]\n";
    out += "id = " + toml_string(part.id) + "\n";
    out += "mode = " + toml_string(rule.mode) + "\n";
    out += "listen = " + toml_array(rule.listen, address_text) + "\n";
    if (!part.clients.empty()) out += "clients = " + toml_array(part.clients, [](const std::string& s) { return s; }) + "\n";
    if (part.max_clients > 0) out += "max_clients = " + std::to_string(part.max_clients) + "\n";
    if (rule.timeout_seconds.value_or(0) > 0)
        out += "timeout = " + toml_string(std::to_string(*rule.timeout_seconds) + "s") + "\n";
    else
        out += "timeout = \"0\"  # none in G5: sessions are never closed for being idle\n";
    out += "servers = " + toml_array(rule.servers, address_text) + "\n";
    return out;
}

std::string render(const G5Config& config, const std::vector<PlannedRule>& planned, std::string_view source_name) {
    std::string out = "# ringlb configuration imported from the G5 config " + printable(source_name) + ".\n";
    out += "# Check it with: ringlb -c FILE --check\n";
    out += render_global(config);
    for (const G5Rule& rule : config.rules)
        if (rule.is_management()) out += render_admin(rule);
    for (const PlannedRule& part : planned) out += render_rule(part);
    return out;
}

void sort_by_position(std::vector<ConfigIssue>& issues) {
    std::stable_sort(issues.begin(), issues.end(), [](const ConfigIssue& a, const ConfigIssue& b) {
        // Problems of the file as a whole (line 0) come last.
        auto position = [](const ConfigIssue& issue) { return std::pair(issue.line == 0 ? ~0u : issue.line, issue.column); };
        return position(a) < position(b);
    });
}

}  // namespace

std::string import_g5(std::string_view g5_text, std::string_view source_name) {
    const std::string file(source_name);
    G5Parser parser(g5_text, file);
    const G5Config config = parser.run();
    std::vector<ConfigIssue> issues = parser.take_issues();
    const std::vector<PlannedRule> planned = plan_rules(config);
    check_split_ids(config, planned, file, issues);
    if (!issues.empty()) {
        sort_by_position(issues);
        throw ConfigError(std::move(issues));
    }
    return render(config, planned, source_name);
}

}  // namespace ringlb::config
