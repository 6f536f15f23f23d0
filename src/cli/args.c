/* Command-line parsing for the cairn command, driven by each command's cliOption table.
 *
 * getopt_long is not used: it prints its own messages in its own words, and every
 * subcommand here must report a bad flag the same way (message + usage, exit 2). Parsing
 * from the same table that generates the usage also keeps --help complete by construction.
 * Main thread only. */
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#include "cli.h"

int cliOptionIndex(const cliOption *opts, const char *name)
{
    for (int i = 0; opts[i].name != NULL; i++) {
        if (strcmp(opts[i].name, name) == 0) {
            return i;
        }
    }
    return -1;
}

static int findLong(const cliOption *opts, const char *name, size_t len)
{
    for (int i = 0; opts[i].name != NULL; i++) {
        if (strlen(opts[i].name) == len && strncmp(opts[i].name, name, len) == 0) {
            return i;
        }
    }
    return -1;
}

static int findShort(const cliOption *opts, char c)
{
    for (int i = 0; opts[i].name != NULL; i++) {
        if (opts[i].shortName != 0 && opts[i].shortName == c) {
            return i;
        }
    }
    return -1;
}

int cliParseArgs(const cliOption *opts, int argc, char **argv, int first, const char **values,
                 int *npositional, char *errmsg, size_t errmsgSize)
{
    int npos = 0;
    int optionsDone = 0;

    for (int i = 0; opts[i].name != NULL; i++) {
        values[i] = NULL;
    }
    for (int i = first; i < argc; i++) {
        char *arg = argv[i];
        int idx;
        const char *inlineValue = NULL;

        if (optionsDone || arg[0] != '-' || arg[1] == '\0') {
            argv[first + npos++] = arg;
            continue;
        }
        if (strcmp(arg, "--") == 0) {
            optionsDone = 1;
            continue;
        }
        if (arg[1] == '-') {
            const char *name = arg + 2;
            const char *eq = strchr(name, '=');
            size_t len = eq != NULL ? (size_t)(eq - name) : strlen(name);
            idx = findLong(opts, name, len);
            if (idx < 0) {
                snprintf(errmsg, errmsgSize, "unknown option '--%.*s'", (int)len, name);
                return CLI_ERR_USAGE;
            }
            if (eq != NULL) {
                inlineValue = eq + 1;
            }
        } else {
            /* One short option per argument: "-x" or "-xVALUE"; bundling flags is rare
             * enough in a database client that the ambiguity is not worth it. */
            idx = findShort(opts, arg[1]);
            if (idx < 0) {
                snprintf(errmsg, errmsgSize, "unknown option '-%c'", arg[1]);
                return CLI_ERR_USAGE;
            }
            if (arg[2] != '\0') {
                inlineValue = arg + 2;
            }
        }
        if (opts[idx].arg == NULL) {
            if (inlineValue != NULL) {
                snprintf(errmsg, errmsgSize, "option '--%s' takes no value", opts[idx].name);
                return CLI_ERR_USAGE;
            }
            values[idx] = "1";
            continue;
        }
        if (inlineValue == NULL) {
            if (i + 1 >= argc) {
                snprintf(errmsg, errmsgSize, "option '--%s' needs a value (%s)", opts[idx].name,
                         opts[idx].arg);
                return CLI_ERR_USAGE;
            }
            inlineValue = argv[++i];
        }
        values[idx] = inlineValue;
    }
    *npositional = npos;
    return 0;
}

void cliPrintCommandUsage(FILE *out, const cliCommand *cmd)
{
    int width = 0;

    if (cmd->name == NULL) {
        /* The shell is cairn without a command: its usage is the general one. */
        cliPrintUsage(out);
        return;
    }
    fprintf(out, "usage: cairn %s %s\n", cmd->name, cmd->synopsis);
    if (cmd->summary != NULL) {
        fprintf(out, "\n%s\n", cmd->summary);
    }
    if (cmd->description != NULL) {
        fprintf(out, "\n%s", cmd->description);
    }
    if (cmd->options == NULL || cmd->options[0].name == NULL) {
        return;
    }
    for (int i = 0; cmd->options[i].name != NULL; i++) {
        const cliOption *o = &cmd->options[i];
        int w = (int)strlen(o->name) + 6 + (o->arg != NULL ? (int)strlen(o->arg) + 1 : 0);
        if (w > width) {
            width = w;
        }
    }
    fprintf(out, "\noptions:\n");
    for (int i = 0; cmd->options[i].name != NULL; i++) {
        const cliOption *o = &cmd->options[i];
        char left[128];
        snprintf(left, sizeof left, "%c%c%s--%s%s%s", o->shortName ? '-' : ' ',
                 o->shortName ? o->shortName : ' ', o->shortName ? ", " : "  ", o->name,
                 o->arg != NULL ? " " : "", o->arg != NULL ? o->arg : "");
        fprintf(out, "  %-*s  %s\n", width, left, o->help);
    }
}

int cliParseCommandArgs(const cliCommand *cmd, int argc, char **argv, const char **values,
                        int *npositional, int *exitCode)
{
    char errmsg[CLI_ERRMSG_SIZE];
    int helpIdx = cliOptionIndex(cmd->options, "help");

    if (cliParseArgs(cmd->options, argc, argv, 1, values, npositional, errmsg, sizeof errmsg) !=
        0) {
        fprintf(stderr, "cairn%s%s: error: %s\n\n", cmd->name != NULL ? " " : "",
                cmd->name != NULL ? cmd->name : "", errmsg);
        cliPrintCommandUsage(stderr, cmd);
        *exitCode = CLI_EXIT_USAGE;
        return 1;
    }
    if (helpIdx >= 0 && values[helpIdx] != NULL) {
        cliPrintCommandUsage(stdout, cmd);
        *exitCode = CLI_EXIT_OK;
        return 1;
    }
    return 0;
}

int cliLevelIsValid(const char *level)
{
    static const char *const levels[] = {"none", "weak", "linearizable", "strong", "auto"};
    for (size_t i = 0; i < sizeof levels / sizeof levels[0]; i++) {
        if (strcmp(level, levels[i]) == 0) {
            return 1;
        }
    }
    return 0;
}

int cliUsageError(const cliCommand *cmd, const char *fmt, ...)
{
    va_list ap;
    fprintf(stderr, "cairn %s: error: ", cmd->name);
    va_start(ap, fmt);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fprintf(stderr, "\n\n");
    cliPrintCommandUsage(stderr, cmd);
    return CLI_EXIT_USAGE;
}

int cliRunSubcommand(const cliCommand *cmd, const cliEnv *env, int argc, char **argv)
{
    size_t len = strlen(cmd->name);
    if (argc < 2) {
        return cliUsageError(cmd, "no subcommand given");
    }
    if (strcmp(argv[1], "--help") == 0 || strcmp(argv[1], "-h") == 0) {
        cliPrintCommandUsage(stdout, cmd);
        return CLI_EXIT_OK;
    }
    for (int i = 0; cmd->subcommands != NULL && cmd->subcommands[i] != NULL; i++) {
        const cliCommand *sub = cmd->subcommands[i];
        if (strcmp(sub->name + len + 1, argv[1]) == 0) {
            return sub->run(sub, env, argc - 1, argv + 1);
        }
    }
    if (argv[1][0] == '-') {
        return cliUsageError(cmd, "expected a subcommand before '%s'", argv[1]);
    }
    return cliUsageError(cmd, "unknown subcommand '%s'", argv[1]);
}
