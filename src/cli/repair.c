/* `cairn repair DATA_DIR`: repair a stopped node's data directory (heal.h), keeping
 * every damaged file in DATA/corrupt/. Main thread only. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"

#include "buf.h"
#include "error.h"
#include "heal.h"

#define MAX_OPTIONS 8
#define VALUE(opts, values, name) ((values)[cliOptionIndex((opts), (name))])

static const cliOption repairOptions[] = {
    {"from-backup", 0, "ID", "restore backup ID (with --repo), then replay the log past it"},
    {"repo", 0, "DIR|URL", "the backup repository of --from-backup (DIR, file:///DIR, s3://BUCKET/PREFIX)"},
    {"from-peer", 0, "URL", "copy the database from a running node of the same cluster"},
    {"force", 0, NULL, "rebuild from snapshot + log even when nothing is found damaged"},
    {"add-checksums", 0, NULL,
     "rewrite a healthy database with a checksum in every page (VACUUM INTO)"},
    {"json", 0, NULL, "print one JSON object of what was found and changed"},
    {"help", 'h', NULL, "show this help"},
    {NULL, 0, NULL, NULL},
};

static void sayLine(void *arg, const char *line)
{
    (void)arg;
    fprintf(stderr, "cairn repair: %s\n", line);
}

static int runRepair(const cliCommand *cmd, const cliEnv *env, int argc, char **argv)
{
    const char *values[MAX_OPTIONS];
    struct heal_options o;
    struct buf report;
    char errmsg[CAIRN_ERRMSG_SIZE];
    const char *backup;
    const char *repo;
    const char *peer;
    bool json;
    int npos, code, rv;

    (void)env;
    if (cliParseCommandArgs(cmd, argc, argv, values, &npos, &code)) {
        return code;
    }
    backup = VALUE(repairOptions, values, "from-backup");
    repo = VALUE(repairOptions, values, "repo");
    peer = VALUE(repairOptions, values, "from-peer");
    json = VALUE(repairOptions, values, "json") != NULL;
    if (npos != 1) {
        fprintf(stderr, "cairn repair: give one data directory\n");
        return CLI_EXIT_USAGE;
    }
    if ((backup != NULL) != (repo != NULL)) {
        fprintf(stderr, "cairn repair: --from-backup ID and --repo DIR go together\n");
        return CLI_EXIT_USAGE;
    }
    if (VALUE(repairOptions, values, "add-checksums") != NULL && (backup != NULL || peer != NULL)) {
        fprintf(stderr, "cairn repair: --add-checksums goes alone (repair first, then add them)\n");
        return CLI_EXIT_USAGE;
    }
    if (backup != NULL && peer != NULL) {
        fprintf(stderr, "cairn repair: --from-backup or --from-peer, not both\n");
        return CLI_EXIT_USAGE;
    }
    memset(&o, 0, sizeof o);
    o.data_dir = argv[1];
    o.mode = VALUE(repairOptions, values, "add-checksums") != NULL ? HEAL_ADD_CHECKSUMS
             : backup                                           ? HEAL_FROM_BACKUP
             : peer                                             ? HEAL_FROM_PEER
                                                                : HEAL_REBUILD;
    o.backup_id = backup;
    o.repo = repo;
    o.peer = peer;
    o.force = VALUE(repairOptions, values, "force") != NULL;
    o.say = json ? NULL : sayLine;
    bufInit(&report);
    rv = healRepair(&o, &report, errmsg);
    if (json) {
        printf("%.*s\n", (int)report.len, report.p ? report.p : "{}");
    }
    bufFree(&report);
    if (rv != 0) {
        fprintf(stderr, "cairn repair: %s\n", errmsg);
        return CLI_EXIT_FAIL;
    }
    return CLI_EXIT_OK;
}

const cliCommand cliRepairCommand = {
    .name = "repair",
    .synopsis = "[options] DATA_DIR",
    .summary = "Repair a stopped node's data directory (damaged database or Raft log).",
    .description =
        "Checks the Raft log and the database of DATA_DIR (the node must be stopped) and\n"
        "repairs them. By default the database is rebuilt from the node's newest snapshot\n"
        "and its log when it is damaged (its snapshot chain is verified before anything\n"
        "moves; a rebuild that fails puts the database back). On a single node whose\n"
        "database holds every entry, a damaged or lost log is replaced by a new one\n"
        "started from the database. --from-backup ID --repo DIR restores a backup and\n"
        "replays the log past it (a damaged log is set aside: writes after the backup are\n"
        "then lost, and the repair says so). --from-peer URL copies the database of a\n"
        "running node of the same cluster; a damaged log is set aside and the node rejoins\n"
        "through that peer at its next start. --add-checksums rewrites a healthy database\n"
        "created before page checksums so that every page carries one (do it on every\n"
        "node of a cluster: nodes' pages differ otherwise). Every replaced file is kept in\n"
        "DATA_DIR/corrupt/. Exit status 0 when the directory is healthy afterwards.",
    .options = repairOptions,
    .run = runRepair,
};
