/* main() of the cairn command: global options, then dispatch to a subcommand.
 *
 * `cairn [--host URL] [COMMAND] ...`: global options come first; the first word that is
 * not an option names the command (see the table below); with no command, the SQL shell
 * runs. New subcommands (backup, restore, check, ...) are a cliCommand in their own file
 * plus one line in the table. Main thread only. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <curl/curl.h>

#include "cli.h"
#include "pagesum.h"

volatile sig_atomic_t cliInterrupted = 0;

static int runHelp(const cliCommand *cmd, const cliEnv *env, int argc, char **argv);

static const cliOption helpOptions[] = {
    {"help", 'h', NULL, "show this help"},
    {NULL, 0, NULL, NULL},
};

static const cliCommand helpCommand = {
    .name = "help",
    .synopsis = "[COMMAND [SUBCOMMAND]]",
    .summary = "Show the usage of cairn, or of one command.",
    .description = NULL,
    .options = helpOptions,
    .run = runHelp,
};

/* The dispatch table. The shell (cliShellCommand) is not in it: it is what runs when no
 * command is named. */
static const cliCommand *const commands[] = {
    &cliSqlCommand,     /* sql.c */
    &cliBackupCommand,  /* backup.c */
    &cliRestoreCommand, /* backup.c */
    &cliNodeCommand,    /* node.c */
    &cliCheckCommand, &cliLogCommand, /* check.c */
    &cliRepairCommand, /* repair.c */
    &cliArchiveCommand, /* archive.c */
    &helpCommand,       /* here */
    NULL,
};

/* Options accepted before the command name, whatever the command. */
static const cliOption globalOptions[] = {
    {"host", 0, "URL", "cairnd to talk to (default $CAIRN_HOST or " CLI_DEFAULT_HOST ")"},
    {"help", 'h', NULL, "show this help, or the command's with a COMMAND"},
    {"version", 'V', NULL, "print the version of cairn and exit"},
    {NULL, 0, NULL, NULL},
};

static const cliCommand *findCommand(const char *name)
{
    for (int i = 0; commands[i] != NULL; i++) {
        if (strcmp(commands[i]->name, name) == 0) {
            return commands[i];
        }
    }
    if (strcmp(name, "shell") == 0) {
        return &cliShellCommand;
    }
    return NULL;
}

static void printOptions(FILE *out, const cliOption *opts)
{
    for (int i = 0; opts[i].name != NULL; i++) {
        const cliOption *o = &opts[i];
        char left[128];
        snprintf(left, sizeof left, "%c%c%s--%s%s%s", o->shortName ? '-' : ' ',
                 o->shortName ? o->shortName : ' ', o->shortName ? ", " : "  ", o->name,
                 o->arg != NULL ? " " : "", o->arg != NULL ? o->arg : "");
        fprintf(out, "  %-22s  %s\n", left, o->help);
    }
}

void cliPrintUsage(FILE *out)
{
    fprintf(out, "usage: cairn [--host URL] [shell options]        interactive SQL shell\n"
                 "       cairn [--host URL] COMMAND [options] [ARGS]\n"
                 "\n"
                 "cairn is the command-line client of cairnd, the replicated SQLite server.\n"
                 "\n"
                 "commands:\n");
    for (int i = 0; commands[i] != NULL; i++) {
        fprintf(out, "  %-10s  %s\n", commands[i]->name, commands[i]->summary);
    }
    fprintf(out, "\nglobal options:\n");
    printOptions(out, globalOptions);
    fprintf(out, "\nshell options (no COMMAND):\n");
    for (int i = 0; cliShellCommand.options[i].name != NULL; i++) {
        const char *name = cliShellCommand.options[i].name;
        /* The ones shared with the global options are listed once, above. */
        if (cliOptionIndex(globalOptions, name) < 0) {
            printOptions(out, (cliOption[]){cliShellCommand.options[i], {NULL, 0, NULL, NULL}});
        }
    }
    fprintf(out, "\n%s", cliShellCommand.description);
    fprintf(out, "\nRun \"cairn help COMMAND\" or \"cairn COMMAND --help\" for a command's "
                 "options.\n"
                 "Exit status: 0 success, 1 failure (SQL error, cairnd unreachable), 2 bad "
                 "usage.\n");
}

static int runHelp(const cliCommand *cmd, const cliEnv *env, int argc, char **argv)
{
    const char *values[sizeof helpOptions / sizeof helpOptions[0]];
    const cliCommand *target;
    int npos;
    int exitCode;

    if (cliParseCommandArgs(cmd, argc, argv, values, &npos, &exitCode)) {
        return exitCode;
    }
    if (npos == 0) {
        cliPrintUsage(stdout);
        return CLI_EXIT_OK;
    }
    target = findCommand(argv[1]);
    if (target != NULL && npos == 2 && target->subcommands != NULL) {
        /* "cairn help backup create": the subcommand's name is "backup create". */
        const cliCommand *sub = NULL;
        size_t len = strlen(target->name);
        for (int i = 0; target->subcommands[i] != NULL; i++) {
            if (strcmp(target->subcommands[i]->name + len + 1, argv[2]) == 0) {
                sub = target->subcommands[i];
            }
        }
        if (sub == NULL) {
            fprintf(stderr, "cairn help: error: unknown subcommand '%s %s'\n\n", argv[1], argv[2]);
            cliPrintCommandUsage(stderr, target);
            return CLI_EXIT_USAGE;
        }
        cliPrintCommandUsage(stdout, sub);
        return CLI_EXIT_OK;
    }
    if (target == NULL || npos > 1) {
        fprintf(stderr, "cairn help: error: unknown command '%s'\n\n", argv[npos > 1 ? 2 : 1]);
        cliPrintUsage(stderr);
        return CLI_EXIT_USAGE;
    }
    if (target == &cliShellCommand) {
        cliPrintUsage(stdout);
    } else {
        cliPrintCommandUsage(stdout, target);
    }
    return CLI_EXIT_OK;
}

/* Consumes the global options at argv[*i...]; stops at the first argument that is not
 * one (the command name, or an option of the shell). Returns 0 or a usage error. */
static int parseGlobal(int argc, char **argv, int *i, cliEnv *env, int *help, int *version)
{
    while (*i < argc) {
        const char *a = argv[*i];
        if (strcmp(a, "--host") == 0) {
            if (*i + 1 >= argc) {
                fprintf(stderr, "cairn: error: option '--host' needs a value (URL)\n\n");
                return CLI_ERR_USAGE;
            }
            env->host = argv[*i + 1];
            *i += 2;
        } else if (strncmp(a, "--host=", 7) == 0) {
            env->host = a + 7;
            (*i)++;
        } else if (strcmp(a, "--help") == 0 || strcmp(a, "-h") == 0) {
            *help = 1;
            (*i)++;
        } else if (strcmp(a, "--version") == 0 || strcmp(a, "-V") == 0) {
            *version = 1;
            (*i)++;
        } else {
            return 0;
        }
    }
    return 0;
}

int main(int argc, char **argv)
{
    cliEnv env = {0};
    const cliCommand *cmd = NULL;
    int help = 0, version = 0;
    int i = 1;
    int exitCode;

    /* Every database the command opens goes through the page-checksum VFS: reads of a
     * database with checksums are verified, and what it writes is sealed. */
    pagesumRegister();
    env.host = getenv("CAIRN_HOST");
    if (env.host == NULL || env.host[0] == '\0') {
        env.host = CLI_DEFAULT_HOST;
    }
    if (parseGlobal(argc, argv, &i, &env, &help, &version) != 0) {
        cliPrintUsage(stderr);
        return CLI_EXIT_USAGE;
    }
    if (i < argc && argv[i][0] != '-') {
        cmd = findCommand(argv[i]);
        if (cmd == NULL) {
            fprintf(stderr, "cairn: error: unknown command '%s'\n\n", argv[i]);
            cliPrintUsage(stderr);
            return CLI_EXIT_USAGE;
        }
    }
    if (version) {
        printf("cairn %s\n", CLI_VERSION);
        return CLI_EXIT_OK;
    }
    if (help) {
        if (cmd != NULL && cmd != &cliShellCommand) {
            cliPrintCommandUsage(stdout, cmd);
        } else {
            cliPrintUsage(stdout);
        }
        return CLI_EXIT_OK;
    }
    if (cmd == NULL) {
        /* The shell parses what is left; argv[i - 1] stands in for its name. */
        cmd = &cliShellCommand;
        i--;
    }
    if (curl_global_init(CURL_GLOBAL_DEFAULT) != 0) {
        fprintf(stderr, "error: cannot initialise libcurl\n");
        return CLI_EXIT_FAIL;
    }
    exitCode = cmd->run(cmd, &env, argc - i, argv + i);
    curl_global_cleanup();
    return exitCode;
}
