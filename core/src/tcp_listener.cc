#include "hybridshard/core/tcp_listener.h"

#include <arpa/inet.h>
#include <netdb.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

#include "hybridshard/core/error.h"

namespace hybridshard::core {
namespace {

std::string host_port_text(const std::string& host, int port) {
  return (host.find(':') != std::string::npos ? "[" + host + "]" : host) + ":" + std::to_string(port);
}

}  // namespace

int listen_tcp(const std::string& host, int port, const std::string& what, int backlog) {
  addrinfo hints{};
  hints.ai_family = AF_UNSPEC;
  hints.ai_socktype = SOCK_STREAM;
  hints.ai_flags = AI_PASSIVE | AI_NUMERICSERV;
  addrinfo* result = nullptr;
  const int resolved = ::getaddrinfo(host.c_str(), std::to_string(port).c_str(), &hints, &result);
  if (resolved != 0 || result == nullptr) {
    HS_THROW(CommError, "cannot resolve " + host_port_text(host, port) + " (" + what + "): " + gai_strerror(resolved));
  }
  const int fd = ::socket(result->ai_family, result->ai_socktype | SOCK_CLOEXEC, result->ai_protocol);
  int one = 1;
  if (fd >= 0) ::setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
  if (fd < 0 || ::bind(fd, result->ai_addr, result->ai_addrlen) != 0 || ::listen(fd, backlog) != 0) {
    const int error = errno;
    ::freeaddrinfo(result);
    if (fd >= 0) ::close(fd);
    if (error == EADDRINUSE) HS_THROW(CommError, "address in use: " + host_port_text(host, port) + " (" + what + ")");
    HS_THROW(CommError, "cannot listen on " + host_port_text(host, port) + " (" + what + "): " + std::strerror(error));
  }
  ::freeaddrinfo(result);
  return fd;
}

int bound_port(int fd) {
  sockaddr_storage bound{};
  socklen_t length = sizeof(bound);
  if (::getsockname(fd, reinterpret_cast<sockaddr*>(&bound), &length) != 0) return -1;
  return bound.ss_family == AF_INET6 ? ntohs(reinterpret_cast<sockaddr_in6*>(&bound)->sin6_port)
                                     : ntohs(reinterpret_cast<sockaddr_in*>(&bound)->sin_port);
}

std::string bound_host(int fd) {
  sockaddr_storage bound{};
  socklen_t length = sizeof(bound);
  if (::getsockname(fd, reinterpret_cast<sockaddr*>(&bound), &length) != 0) return "";
  char text[INET6_ADDRSTRLEN] = {0};
  if (bound.ss_family == AF_INET6) {
    ::inet_ntop(AF_INET6, &reinterpret_cast<sockaddr_in6*>(&bound)->sin6_addr, text, sizeof(text));
  } else {
    ::inet_ntop(AF_INET, &reinterpret_cast<sockaddr_in*>(&bound)->sin_addr, text, sizeof(text));
  }
  return text;
}

}  // namespace hybridshard::core
