#include "rank_list.h"

#include <QStringList>
#include <algorithm>

namespace hybridshard::gui {

bool parse_rank_list(const QString& text, QVector<int>* ranks) {
  ranks->clear();
  for (const QString& part : text.split(',', Qt::SkipEmptyParts)) {
    const QStringList range = part.trimmed().split('-');
    bool first_ok = false, last_ok = false;
    const int first = range.value(0).toInt(&first_ok);
    const int last = range.size() == 2 ? range.value(1).toInt(&last_ok) : first;
    if (!first_ok || (range.size() == 2 && !last_ok) || range.size() > 2 || first < 0 || last < first ||
        last - first > 1 << 20) {
      ranks->clear();
      return false;
    }
    for (int rank = first; rank <= last; ++rank) *ranks << rank;
  }
  return !ranks->isEmpty();
}

QString format_rank_list(QVector<int> ranks) {
  std::sort(ranks.begin(), ranks.end());
  ranks.erase(std::unique(ranks.begin(), ranks.end()), ranks.end());
  QStringList parts;
  for (qsizetype first = 0; first < ranks.size();) {
    qsizetype last = first;
    while (last + 1 < ranks.size() && ranks[last + 1] == ranks[last] + 1) ++last;
    parts << (last == first ? QString::number(ranks[first])
                            : QStringLiteral("%1-%2").arg(ranks[first]).arg(ranks[last]));
    first = last + 1;
  }
  return parts.join(QLatin1Char(','));
}

}  // namespace hybridshard::gui
