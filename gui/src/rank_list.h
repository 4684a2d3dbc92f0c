// Lists of ranks as an operator types them, on the command line (--ranks) and in the timeline's rank picker.
#pragma once

#include <QString>
#include <QVector>

namespace hybridshard::gui {

// "0", "0,2", "0-3,8": ranks in the order given; false on anything else (empty, "x", "3-1", "-1").
bool parse_rank_list(const QString& text, QVector<int>* ranks);
// Sorted ranks as the shortest such text: {0, 1, 2, 3, 8} -> "0-3,8".
QString format_rank_list(QVector<int> ranks);

}  // namespace hybridshard::gui
