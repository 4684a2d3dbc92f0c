// Live data: polls GET <url>/status every poll interval with QNetworkAccessManager. Every request has a transfer
// timeout, so a job that stops answering turns the state to stale (or refused) instead of hanging the dashboard.
// The first poll gets the whole document; the next ones ask only for what changed since (?since=CURSOR) and merge it
// (StatusMirror): the snapshot is the same as the whole document's, the series cover the whole job.
#pragma once

#include <QElapsedTimer>
#include <QMap>
#include <QPointer>
#include <QTimer>
#include <QUrl>

#include "data_source.h"
#include "status_mirror.h"

class QNetworkAccessManager;
class QNetworkReply;

namespace hybridshard::gui {

struct LiveSourceOptions {
  int poll_interval_ms = 1000;
  int request_timeout_ms = 2000;  // per request
  int stale_after_ms = 5000;      // connected but no valid answer for this long: stale
  QString job;  // against `hybridshard serve`: the job to show (GET /status?job=NAME); "" for the endpoint's default
};

class LiveSource : public DataSource {
  Q_OBJECT

 public:
  // `url`: the job's endpoint, "http://host:port" (GET /status is appended) or the full ".../status" URL; with
  // options.job, the query picks that job of a `hybridshard serve`.
  explicit LiveSource(const QUrl& url, LiveSourceOptions options = {}, QObject* parent = nullptr);

  QString description() const override { return status_url_.toString(); }
  void start() override;
  QUrl status_url() const { return status_url_; }
  int polls_answered() const { return polls_answered_; }
  qint64 bytes_received() const { return bytes_received_; }  // bodies of the valid answers so far

 private:
  void poll();
  void on_finished(QNetworkReply* reply);
  void check_stale();
  QUrl poll_url() const;

  QUrl status_url_;
  LiveSourceOptions options_;
  QNetworkAccessManager* network_;
  QTimer poll_timer_;
  QPointer<QNetworkReply> in_flight_;
  QElapsedTimer since_last_good_;
  bool had_data_ = false;
  int polls_answered_ = 0;
  qint64 bytes_received_ = 0;
  StatusMirror mirror_;
};

}  // namespace hybridshard::gui
