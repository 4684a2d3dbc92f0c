// Live data: polls GET <url>/status every poll interval with QNetworkAccessManager. Every request has a transfer
// timeout, so a job that stops answering turns the state to stale (or refused) instead of hanging the dashboard.
#pragma once

#include <QElapsedTimer>
#include <QMap>
#include <QPointer>
#include <QTimer>
#include <QUrl>

#include "data_source.h"

class QNetworkAccessManager;
class QNetworkReply;

namespace hybridshard::gui {

struct LiveSourceOptions {
  int poll_interval_ms = 1000;
  int request_timeout_ms = 2000;  // per request
  int stale_after_ms = 5000;      // connected but no valid answer for this long: stale
  int max_samples_per_rank = 20000;
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

 private:
  void poll();
  void on_finished(QNetworkReply* reply);
  void check_stale();
  void merge_history(JobSnapshot* snapshot);

  QUrl status_url_;
  LiveSourceOptions options_;
  QNetworkAccessManager* network_;
  QTimer poll_timer_;
  QPointer<QNetworkReply> in_flight_;
  QElapsedTimer since_last_good_;
  bool had_data_ = false;
  int polls_answered_ = 0;
  QMap<int, QVector<MemorySample>> memory_;         // per rank, by time
  QMap<QPair<int, double>, PhaseInterval> phases_;  // (rank, begin) -> interval
};

}  // namespace hybridshard::gui
