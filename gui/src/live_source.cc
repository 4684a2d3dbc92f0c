#include "live_source.h"

#include <QNetworkAccessManager>
#include <QNetworkReply>
#include <QNetworkRequest>
#include <QUrlQuery>

#include "status_json.h"

namespace hybridshard::gui {

namespace {

QUrl status_url_for(const QUrl& url, const QString& job) {
  QUrl result = url;
  if (!job.isEmpty()) {
    QUrlQuery query(result);
    query.removeAllQueryItems(QStringLiteral("job"));
    query.addQueryItem(QStringLiteral("job"), QString::fromLatin1(QUrl::toPercentEncoding(job)));
    result.setQuery(query);
  }
  QString path = result.path();
  if (path.endsWith(QLatin1String("/status"))) return result;
  if (path.endsWith('/')) path.chop(1);
  result.setPath(path + QStringLiteral("/status"));
  return result;
}

}  // namespace

LiveSource::LiveSource(const QUrl& url, LiveSourceOptions options, QObject* parent)
    : DataSource(parent),
      status_url_(status_url_for(url, options.job)),
      options_(options),
      network_(new QNetworkAccessManager(this)) {
  poll_timer_.setInterval(options_.poll_interval_ms);
  connect(&poll_timer_, &QTimer::timeout, this, &LiveSource::poll);
  connect(network_, &QNetworkAccessManager::finished, this, &LiveSource::on_finished);
  set_connection_state(ConnectionState::kConnecting, status_url_.toString());
}

void LiveSource::start() {
  poll();
  poll_timer_.start();
}

void LiveSource::poll() {
  check_stale();
  if (in_flight_) return;  // the previous request is still within its timeout
  QNetworkRequest request(poll_url());
  request.setTransferTimeout(options_.request_timeout_ms);
  request.setRawHeader("Accept", "application/json");
  in_flight_ = network_->get(request);
}

QUrl LiveSource::poll_url() const {
  if (mirror_.cursor().isEmpty()) return status_url_;
  QUrl url = status_url_;
  QUrlQuery query(url);
  query.removeAllQueryItems(QStringLiteral("since"));
  query.addQueryItem(QStringLiteral("since"), QString::fromLatin1(QUrl::toPercentEncoding(mirror_.cursor())));
  url.setQuery(query);
  return url;
}

void LiveSource::check_stale() {
  if (had_data_ && connection_state() == ConnectionState::kConnected &&
      since_last_good_.elapsed() > options_.stale_after_ms) {
    set_connection_state(
        ConnectionState::kStale,
        QStringLiteral("no valid answer for %1 s").arg(since_last_good_.elapsed() / 1000.0, 0, 'f', 1));
  }
}

void LiveSource::on_finished(QNetworkReply* reply) {
  reply->deleteLater();
  if (reply == in_flight_) in_flight_ = nullptr;
  const QString age =
      had_data_ ? QStringLiteral(" (last good answer %1 s ago)").arg(since_last_good_.elapsed() / 1000.0, 0, 'f', 1)
                : QString();
  if (reply->error() == QNetworkReply::OperationCanceledError) {
    // setTransferTimeout aborts with OperationCanceledError.
    const QString detail = QStringLiteral("no answer from %1 within %2 s%3")
                               .arg(status_url_.toString())
                               .arg(options_.request_timeout_ms / 1000.0)
                               .arg(age);
    set_connection_state(had_data_ ? ConnectionState::kStale : ConnectionState::kRefused, detail);
    return;
  }
  if (reply->error() != QNetworkReply::NoError) {
    const int http_status = reply->attribute(QNetworkRequest::HttpStatusCodeAttribute).toInt();
    QString detail = http_status > 0 ? QStringLiteral("%1: HTTP %2").arg(status_url_.toString()).arg(http_status)
                                     : QStringLiteral("%1: %2").arg(status_url_.toString(), reply->errorString());
    set_connection_state(ConnectionState::kRefused, detail + age);
    return;
  }
  const QByteArray body = reply->readAll();
  StatusParseResult parsed = parse_status(body);
  if (!parsed.ok) {
    set_connection_state(ConnectionState::kMalformed, parsed.error + age);
    return;
  }
  had_data_ = true;
  ++polls_answered_;
  bytes_received_ += body.size();
  since_last_good_.start();
  mirror_.apply(std::move(parsed));
  publish(mirror_.snapshot());
  set_connection_state(ConnectionState::kConnected, status_url_.toString());
}

}  // namespace hybridshard::gui
