// A listening TCP socket on one address: the rendezvous store (handed to c10d where it can take one) and the event
// stream bind through here, so that both bind exactly the address they were given and say the same thing when it
// is taken.
#pragma once

#include <string>

namespace hybridshard::core {

// Binds host:port (an IPv4 or IPv6 literal, or a name: its first address) and listens; port 0 picks a free port.
// SOCK_CLOEXEC, SO_REUSEADDR. Returns the socket. Throws CommError "address in use: HOST:PORT (WHAT)" when the
// address is taken, else naming the address, `what` and the system's reason.
int listen_tcp(const std::string& host, int port, const std::string& what, int backlog = 256);

// The local port of a bound socket.
int bound_port(int fd);

// The local address of a bound socket, as text ("127.0.0.1", "::", "0.0.0.0").
std::string bound_host(int fd);

}  // namespace hybridshard::core
