// A tiny HTTP/1.1 server on 127.0.0.1 (port 0) that answers every request with a canned response (or one a function
// makes from the request line), or not at all.
#pragma once

#include <QHostAddress>
#include <QTcpServer>
#include <QTcpSocket>
#include <functional>

namespace hybridshard::gui::testing {

class FakeStatusServer : public QTcpServer {
 public:
  enum class Mode { kAnswer, kSilent };

  explicit FakeStatusServer(QObject* parent = nullptr) : QTcpServer(parent) {
    connect(this, &QTcpServer::newConnection, this, [this] {
      while (QTcpSocket* socket = nextPendingConnection()) {
        socket->setParent(this);
        connect(socket, &QTcpSocket::readyRead, socket, [this, socket] {
          buffer_ += socket->readAll();
          if (!buffer_.contains("\r\n\r\n")) return;
          const QByteArray request_line = buffer_.left(buffer_.indexOf("\r\n"));
          buffer_.clear();
          requests_ << request_line;
          if (mode_ == Mode::kSilent) return;  // accept, read, never answer
          const QByteArray body = responder_ ? responder_(request_line) : body_;
          QByteArray response = "HTTP/1.1 " + status_line_ + "\r\nContent-Type: application/json\r\nContent-Length: " +
                                QByteArray::number(body.size()) + "\r\nConnection: close\r\n\r\n" + body;
          socket->write(response);
          socket->disconnectFromHost();
        });
      }
    });
  }

  bool listen_on_loopback() { return listen(QHostAddress::LocalHost, 0); }
  QString url() const { return QStringLiteral("http://127.0.0.1:%1").arg(serverPort()); }
  void set_response(const QByteArray& body, const QByteArray& status_line = "200 OK") {
    body_ = body;
    status_line_ = status_line;
  }
  void set_mode(Mode mode) { mode_ = mode; }
  void set_responder(std::function<QByteArray(const QByteArray& request_line)> responder) {
    responder_ = std::move(responder);
  }
  const QList<QByteArray>& requests() const { return requests_; }

 private:
  QByteArray body_;
  QByteArray status_line_ = "200 OK";
  QByteArray buffer_;
  std::function<QByteArray(const QByteArray&)> responder_;
  Mode mode_ = Mode::kAnswer;
  QList<QByteArray> requests_;
};

}  // namespace hybridshard::gui::testing
