#include "job_summary.h"

#include <QMap>
#include <algorithm>

#include "units.h"

namespace hybridshard::gui {

JobSummary summarize(const JobSnapshot& snapshot) {
  JobSummary summary;
  const JobInfo& job = snapshot.job;
  if (job.known) {
    QStringList model;
    if (!job.architecture.isEmpty()) model << job.architecture;
    if (job.num_hidden_layers > 0) model << QStringLiteral("%1 layers").arg(job.num_hidden_layers);
    if (!job.model_dtype.isEmpty()) model << job.model_dtype;
    if (!job.backend.isEmpty()) model << job.backend;
    if (!job.strategy.isEmpty()) model << job.strategy;
    summary.model = model.join(QStringLiteral(" \u00b7 "));
  }
  summary.layout = job.layout_text();

  int up = 0;
  for (const RankState& rank : snapshot.ranks) up += rank.up ? 1 : 0;
  const int world = job.known ? job.world_size : static_cast<int>(snapshot.ranks.size());
  summary.world = QStringLiteral("%1 ranks (%2 up)").arg(world).arg(up);

  const QString current = snapshot.iteration >= 0 ? QString::number(snapshot.iteration + 1) : QStringLiteral("\u2014");
  summary.iteration =
      job.known && job.iterations > 0 ? QStringLiteral("%1 / %2").arg(current).arg(job.iterations) : current;
  summary.state = snapshot.state.isEmpty() ? QStringLiteral("unknown") : snapshot.state;

  QMap<QString, int> phase_counts;
  for (const RankState& rank : snapshot.ranks) {
    if (!rank.phase.isEmpty()) ++phase_counts[rank.phase];
  }
  QStringList phases;
  for (auto it = phase_counts.begin(); it != phase_counts.end(); ++it) {
    phases << (phase_counts.size() == 1 ? it.key() : QStringLiteral("%1 %2").arg(it.value()).arg(it.key()));
  }
  summary.phases = phases.isEmpty() ? QStringLiteral("\u2014") : phases.join(QStringLiteral(", "));

  double bandwidth_sum = 0;
  int bandwidth_ranks = 0;
  std::int64_t bytes_sum = 0;
  for (const RankState& rank : snapshot.ranks) {
    summary.enter_seconds = std::max(summary.enter_seconds, rank.last_enter_seconds);
    summary.exit_seconds = std::max(summary.exit_seconds, rank.last_exit_seconds);
    if (rank.last_enter_seconds > 0) {
      bandwidth_sum += rank.last_enter_network_bytes / rank.last_enter_seconds;
      bytes_sum += rank.last_enter_network_bytes;
      ++bandwidth_ranks;
    }
  }
  summary.last_enter = format_duration(summary.enter_seconds);
  summary.last_exit = format_duration(summary.exit_seconds);
  if (bandwidth_ranks > 0) {
    summary.bandwidth_gbps = bandwidth_sum / bandwidth_ranks / 1e9;
    summary.bandwidth =
        QStringLiteral("%1 at %2")
            .arg(format_bytes(bytes_sum / bandwidth_ranks), format_rate(bandwidth_sum / bandwidth_ranks));
  } else {
    summary.bandwidth = QStringLiteral("\u2014");
  }
  return summary;
}

}  // namespace hybridshard::gui
