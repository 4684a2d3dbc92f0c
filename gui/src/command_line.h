// The command line of hybridshard-dashboard: every option, its checks, and the answers to --help and --version,
// which need no display (main() asks before it creates the QApplication).
#pragma once

#include <QString>
#include <QStringList>
#include <QUrl>
#include <QVector>

#include "alert_model.h"

namespace hybridshard::gui {

struct DashboardOptions {
  QUrl connect;  // exactly one of connect and replay
  QString job;
  QString replay;
  QString screenshot;  // empty: show the window
  double at = -1;      // replay: seconds since the record's start; < 0: the end
  QVector<int> ranks;  // of the memory timeline; empty: the first rank
  int width = 1600, height = 1000;
  double wait_seconds = 10;
  int interval_ms = 1000;
  AlertRules rules;
  double last_seconds = 0;  // the timeline shows the last this many seconds; 0: the whole job
  bool capacity_line = true;
  bool log_scale = false;
};

enum class CommandLineAction { kRun, kHelp, kVersion, kError };

struct ParsedCommandLine {
  CommandLineAction action = CommandLineAction::kError;
  DashboardOptions options;  // kRun
  QString text;              // kHelp, kVersion: what to print; kError: the message, naming the option
};

// True when argv asks for --help, -h, --help-all, --version or -v: main() answers with a QCoreApplication.
bool asks_help_or_version(int argc, char** argv);
// True when argv has --screenshot: main() renders offscreen.
bool asks_screenshot(int argc, char** argv);

// `arguments` as QCoreApplication::arguments() gives them (program name first, Qt's own options removed).
ParsedCommandLine parse_command_line(const QStringList& arguments);

}  // namespace hybridshard::gui
