// Network addresses as the command line, the job file and the environment spell them: HOST:PORT, where HOST is a
// dotted IPv4 address (four octets 0..255), an IPv6 address in brackets ([::1]) or a host name, and PORT a number
// in 0..65535 (0: any free port, where a listener is meant). One parser for every flag, key and variable that names
// an address (--metrics-listen / metrics.listen, serve --listen and --events, HYBRIDSHARD_EVENTS,
// HYBRIDSHARD_SERVE), so that each refuses the same mistakes with the same words.
#pragma once

#include <string>

namespace hybridshard::service {

struct HostPort {
  std::string host;  // without brackets: "127.0.0.1", "::1", "node-3.cluster"
  int port = 0;
  bool ipv6 = false;  // host is an IPv6 literal

  // "HOST:PORT", with brackets around an IPv6 host ("[::1]:0").
  std::string text() const;
  // 0.0.0.0 or [::]: a listener there is reachable from every network the host is on.
  bool all_interfaces() const;
};

// Parses `address`; throws core::ConfigError naming `what` (the flag, key or variable), the address and the
// problem: "--metrics-listen '256.0.0.0:9464': 256 is not an IPv4 octet (0..255)".
HostPort parse_host_port(const std::string& address, const std::string& what);

// "" when `address` parses, else what is wrong with it (for reports that name the key themselves).
std::string host_port_problem(const std::string& address);

// The warning for a listener on all interfaces ("" otherwise), naming `what` and who can reach it.
std::string all_interfaces_warning(const HostPort& address, const std::string& what);

}  // namespace hybridshard::service
