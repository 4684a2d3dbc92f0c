// A minimal blocking HTTP/1.1 client for tests: one request per connection, 127.0.0.1 only, with timeouts.
#pragma once

#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <unistd.h>

#include <cctype>
#include <stdexcept>
#include <string>

namespace hybridshard::testing {

struct RawHttpResponse {
  int status = 0;
  std::string head;
  std::string body;
};

// A connected socket to 127.0.0.1:port with 20 s send and receive timeouts (an answer rendered under ASan on a loaded
// 2-core machine took longer than 5 s once: observer_test in a clean-clone run); throws when it cannot connect.
inline int connect_loopback(int port) {
  int fd = ::socket(AF_INET, SOCK_STREAM, 0);
  if (fd < 0) throw std::runtime_error("socket failed");
  timeval timeout{20, 0};
  ::setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &timeout, sizeof(timeout));
  ::setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &timeout, sizeof(timeout));
  sockaddr_in address{};
  address.sin_family = AF_INET;
  address.sin_port = htons(static_cast<std::uint16_t>(port));
  address.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  if (::connect(fd, reinterpret_cast<sockaddr*>(&address), sizeof(address)) != 0) {
    ::close(fd);
    throw std::runtime_error("connect to 127.0.0.1:" + std::to_string(port) + " failed");
  }
  return fd;
}

// Sends `request` as is to 127.0.0.1:port and reads until the server closes the connection (20 s timeout).
inline RawHttpResponse raw_http(int port, const std::string& request) {
  const int fd = connect_loopback(port);
  std::size_t sent = 0;
  while (sent < request.size()) {
    ssize_t n = ::send(fd, request.data() + sent, request.size() - sent, MSG_NOSIGNAL);
    if (n <= 0) break;  // the server may refuse and close before reading everything
    sent += static_cast<std::size_t>(n);
  }
  std::string data;
  char chunk[4096];
  while (true) {
    ssize_t n = ::recv(fd, chunk, sizeof(chunk), 0);
    if (n <= 0) break;
    data.append(chunk, static_cast<std::size_t>(n));
  }
  ::close(fd);
  RawHttpResponse response;
  auto end = data.find("\r\n\r\n");
  response.head = data.substr(0, end);
  if (end != std::string::npos) response.body = data.substr(end + 4);
  if (data.rfind("HTTP/1.", 0) == 0 && data.size() > 12) response.status = std::stoi(data.substr(9, 3));
  return response;
}

// `text` as a query-string value: letters, digits and -_.~ as they are, every other byte as %XX.
inline std::string url_encode(const std::string& text) {
  static const char* hex = "0123456789ABCDEF";
  std::string out;
  for (unsigned char c : text) {
    if (std::isalnum(c) || c == '-' || c == '_' || c == '.' || c == '~') {
      out.push_back(static_cast<char>(c));
    } else {
      out += {'%', hex[c >> 4], hex[c & 15]};
    }
  }
  return out;
}

inline RawHttpResponse http_get(int port, const std::string& target) {
  return raw_http(port, "GET " + target + " HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n");
}

}  // namespace hybridshard::testing
