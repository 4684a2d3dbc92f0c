#include "hybridshard/service/events/host_port.h"

#include <arpa/inet.h>

#include <algorithm>
#include <cctype>

#include "hybridshard/core/error.h"

namespace hybridshard::service {
namespace {

constexpr const char* kExpected = " (expected HOST:PORT: 127.0.0.1:9464, [::1]:9464 or a host name; port 0..65535)";

bool all_digits(const std::string& text) {
  return !text.empty() && std::all_of(text.begin(), text.end(), [](unsigned char c) { return std::isdigit(c); });
}

// "" when `host` is a dotted IPv4 address with four octets in 0..255, else the problem.
std::string ipv4_problem(const std::string& host) {
  std::size_t start = 0;
  for (int octet = 0; octet < 4; ++octet) {
    const std::size_t dot = octet < 3 ? host.find('.', start) : host.size();
    if (dot == std::string::npos) return "an IPv4 address has four octets";
    const std::string part = host.substr(start, dot - start);
    if (!all_digits(part) || part.size() > 3 || std::stoi(part) > 255) {
      return "'" + part + "' is not an IPv4 octet (0..255)";
    }
    if (part.size() > 1 && part.front() == '0') return "'" + part + "' has a leading zero (octal to some parsers)";
    start = dot + 1;
  }
  return start - 1 == host.size() ? "" : "an IPv4 address has four octets";
}

// "" when `host` is a host name (RFC 1123 labels: letters, digits, '-', 1..63 each, 253 in all), else the problem.
std::string host_name_problem(const std::string& host) {
  if (host.size() > 253) return "a host name has at most 253 characters";
  std::size_t start = 0;
  while (true) {
    const std::size_t dot = std::min(host.find('.', start), host.size());
    const std::string label = host.substr(start, dot - start);
    if (label.empty() || label.size() > 63) return "'" + host + "' is not a host name (empty or overlong label)";
    for (unsigned char c : label) {
      if (!std::isalnum(c) && c != '-')
        return "'" + host + "' is not a host name (character '" + std::string(1, c) + "')";
    }
    if (label.front() == '-' || label.back() == '-')
      return "'" + host + "' is not a host name (label starts or ends with '-')";
    if (dot == host.size()) return "";
    start = dot + 1;
  }
}

}  // namespace

std::string HostPort::text() const { return (ipv6 ? "[" + host + "]" : host) + ":" + std::to_string(port); }

bool HostPort::all_interfaces() const {
  if (!ipv6) return host == "0.0.0.0";
  in6_addr address{};
  return ::inet_pton(AF_INET6, host.c_str(), &address) == 1 && IN6_IS_ADDR_UNSPECIFIED(&address);
}

namespace {

// Parses `address` into `result`; "" on success, else what is wrong.
std::string parse_into(const std::string& address, HostPort& result) {
  std::string port_text;
  if (!address.empty() && address.front() == '[') {
    const std::size_t close = address.find(']');
    if (close == std::string::npos) return "no ']' after the IPv6 address";
    if (close + 1 >= address.size() || address[close + 1] != ':') return "no ':PORT' after ']'";
    result.host = address.substr(1, close - 1);
    result.ipv6 = true;
    in6_addr parsed{};
    if (::inet_pton(AF_INET6, result.host.c_str(), &parsed) != 1) return "'" + result.host + "' is not an IPv6 address";
    port_text = address.substr(close + 2);
  } else {
    const std::size_t colon = address.rfind(':');
    if (colon == std::string::npos) return "no ':PORT'";
    result.host = address.substr(0, colon);
    port_text = address.substr(colon + 1);
    if (result.host.empty()) return "no host before ':'";
    if (result.host.find(':') != std::string::npos) return "write an IPv6 address in brackets: [ADDRESS]:PORT";
    const bool numeric = result.host.find_first_not_of("0123456789.") == std::string::npos;
    std::string problem = numeric ? ipv4_problem(result.host) : host_name_problem(result.host);
    if (!problem.empty()) return problem;
  }
  if (!all_digits(port_text) || port_text.size() > 5 || std::stoi(port_text) > 65535) {
    return "the port '" + port_text + "' is not a number in 0..65535";
  }
  result.port = std::stoi(port_text);
  return "";
}

}  // namespace

std::string host_port_problem(const std::string& address) {
  HostPort ignored;
  const std::string problem = parse_into(address, ignored);
  return problem.empty() ? "" : problem + kExpected;
}

HostPort parse_host_port(const std::string& address, const std::string& what) {
  HostPort result;
  const std::string problem = parse_into(address, result);
  if (!problem.empty()) HS_THROW(core::ConfigError, what + " '" + address + "': " + problem + kExpected);
  return result;
}

std::string all_interfaces_warning(const HostPort& address, const std::string& what) {
  if (!address.all_interfaces()) return "";
  return "warning: " + what + " " + address.text() +
         " listens on every network interface: anyone who can reach this host can connect (use 127.0.0.1 or one "
         "address)";
}

}  // namespace hybridshard::service
