/* The cairn command: what every subcommand module shares.
 *
 * `cairn` is a thin client of cairnd's HTTP API; the only part of the library it runs
 * itself is the backup engine (backup.h), for the standalone mode of `cairn backup` and
 * `cairn restore` on a plain SQLite file (see backup.c). main.c holds the dispatch table
 * of subcommands; each subcommand lives in its own file and describes itself with a
 * cliCommand (name, help, options, run function), so usage text and option parsing come
 * from one table and cannot drift apart. Single-threaded: everything here runs on the
 * main thread. */
#ifndef CAIRN_CLI_H
#define CAIRN_CLI_H

#include <stdbool.h>
#include <stdint.h>

#include <signal.h>
#include <stddef.h>
#include <stdio.h>

#include "lock.h"

#define CLI_VERSION "0.1.0"
#define CLI_DEFAULT_HOST "http://127.0.0.1:4001"
#define CLI_ERRMSG_SIZE 1024

/* Process exit codes, shared by every subcommand so scripts can rely on them. */
#define CLI_EXIT_OK 0
#define CLI_EXIT_FAIL 1  /* the command ran and something failed (SQL error, unreachable) */
#define CLI_EXIT_USAGE 2 /* the command line itself is wrong */

/* Result codes of the CLI's internal functions (0 is success). */
#define CLI_ERR_NOMEM 1     /* out of memory */
#define CLI_ERR_NET 2       /* cairnd could not be reached or the transfer failed */
#define CLI_ERR_PROTO 3     /* cairnd answered something this client does not understand */
#define CLI_ERR_SQL 4       /* at least one statement (or the request) was refused */
#define CLI_ERR_USAGE 5     /* bad arguments */
#define CLI_ERR_IO 6        /* a local file could not be read or written */
#define CLI_ERR_INTERRUPT 7 /* the user pressed Ctrl-C */

/* Set by the SIGINT handler; long operations (HTTP transfers) poll it so Ctrl-C cancels
 * the request without killing the shell. */
extern volatile sig_atomic_t cliInterrupted;

/* One option of a command. Options are spelled --name, --name=VALUE, --name VALUE, or -s
 * [VALUE] when shortName is set. */
typedef struct cliOption {
    const char *name; /* long name without the dashes */
    char shortName;   /* 0 when the option has no one-letter form */
    const char *arg;  /* placeholder shown in the usage (e.g. "URL"); NULL for a flag */
    const char *help; /* one line */
} cliOption;

/* What the global options (before the subcommand) set; subcommands may override. */
typedef struct cliEnv {
    const char *host; /* base URL, as typed; normalised by cliHttpInit() */
} cliEnv;

typedef struct cliCommand {
    const char *name;
    const char *synopsis;     /* arguments after "cairn NAME", e.g. "[options] SQL [SQL...]" */
    const char *summary;      /* one line for the command list */
    const char *description;  /* a paragraph or more for "cairn NAME --help"; may be NULL */
    const cliOption *options; /* terminated by an entry whose name is NULL */
    /* argv[0] is the command's name; the options are not parsed yet. Returns an exit code. */
    int (*run)(const struct cliCommand *cmd, const cliEnv *env, int argc, char **argv);
    /* A command made of subcommands (`cairn backup create`) lists them here, NULL-ended,
     * each named "command subcommand", so that `cairn help backup create` finds them;
     * NULL for a plain command. */
    const struct cliCommand *const *subcommands;
} cliCommand;

/* The subcommands; main.c lists them in its dispatch table. */
extern const cliCommand cliShellCommand;
extern const cliCommand cliSqlCommand;
extern const cliCommand cliBackupCommand;  /* backup.c */
extern const cliCommand cliRestoreCommand; /* backup.c */
extern const cliCommand cliNodeCommand;    /* node.c */
extern const cliCommand cliCheckCommand, cliLogCommand; /* check.c */
extern const cliCommand cliRepairCommand; /* repair.c */
extern const cliCommand cliArchiveCommand; /* archive.c */

/* `cairn restore --repo URL --out FILE` to a point in time (archive.c): --to-index N,
 * --to-time T, or (latest) the archive's head; a base backup plus the archived entries
 * after it. Returns an exit code; prints the outcome. */
int cliPitrRestore(const char *repo, const char *to_index, const char *to_time, bool latest,
                   const char *out, bool force, bool keep, int check, bool json);
/* An ISO-8601 time (2026-12-02T10:02:00Z, with a fraction or a ±HH:MM offset) or Unix
 * milliseconds; -1 when it is neither. */
int cliParseTime(const char *s, int64_t *ms);
/* Whether the repository at url holds archive segments (archive.c): 1 or 0; -1 with
 * errmsg (CAIRN_ERRMSG_SIZE) when its listing failed, which says neither. A repository
 * that cannot be opened, or a local one that is not a directory, holds none (the
 * caller's next step says what is wrong with it). */
int cliRepoHasArchive(const char *url, char *errmsg);

/* Before a restore writes out (--force: force): refuses, with errmsg (CAIRN_ERRMSG_SIZE)
 * naming the process, a file a live process uses: one in a cairn data directory whose
 * lock another process holds (a running cairnd, a cairn repair), or one on which, or on
 * whose -shm, -wal or -journal, another process holds a lock (SQLite's: the file is
 * someone's open database; cairnd's db.sqlite through a hard link). In a data directory
 * not in use, *held takes its lock (lock.h), to keep until the restore has ended
 * (lockRelease), so that no node starts under it; else *held is DIRLOCK_NONE. Returns 0,
 * or CAIRN_ELOCKED (another code when the lock could not be taken) with errmsg. */
int cliClaimOut(const char *out, bool force, struct dirlock *held, char *errmsg);

/* Parses argv[first..argc) against opts. values[i] receives the value of opts[i] (for a
 * flag, the string "1"; a repeated option keeps its last value), NULL when absent; values
 * must have room for every option. Arguments that are not options are moved, in order, to
 * the front of argv+first and their count is stored in *npositional; "--" ends the options.
 * A lone "-" is positional. Returns 0, or CLI_ERR_USAGE with errmsg set. The strings in
 * values point into argv. */
int cliParseArgs(const cliOption *opts, int argc, char **argv, int first, const char **values,
                 int *npositional, char *errmsg, size_t errmsgSize);

/* Index of the option named name in opts; -1 when there is none (a programming error). */
int cliOptionIndex(const cliOption *opts, const char *name);

/* Writes the usage of cmd (synopsis, description, every option) to out; for the shell
 * (no name), the general usage of cairn. */
void cliPrintCommandUsage(FILE *out, const cliCommand *cmd);

/* Parses and checks the options of a command that has a --help flag. On --help prints the
 * usage to stdout and stores CLI_EXIT_OK in *exitCode; on a usage error prints the message
 * and usage to stderr and stores CLI_EXIT_USAGE. Returns 1 when the command should stop
 * with *exitCode, 0 when it should go on. */
int cliParseCommandArgs(const cliCommand *cmd, int argc, char **argv, const char **values,
                        int *npositional, int *exitCode);

/* "cairn NAME: error: ..." and the command's usage on stderr; returns CLI_EXIT_USAGE. */
int cliUsageError(const cliCommand *cmd, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* The run of a command made of subcommands (cmd->subcommands, each named "NAME SUB"):
 * runs the one argv[1] names, or explains what is wrong. */
int cliRunSubcommand(const cliCommand *cmd, const cliEnv *env, int argc, char **argv);

/* Writes the general usage of cairn (commands, global and shell options) to out. */
void cliPrintUsage(FILE *out);

/* The read consistency levels the server accepts (auto: weak on a voter, none on a node
 * that does not vote, as rqlite's), for help and messages. */
#define CLI_LEVELS "none, weak, linearizable, strong or auto"

/* Checks a consistency level name; returns 1 when it is one the server accepts. */
int cliLevelIsValid(const char *level);

#endif
