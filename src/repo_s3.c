/* The S3 driver of the repository object (repo_driver.h): not built yet. This file is
 * where it goes: repoS3Open parses s3://BUCKET/PREFIX and returns a struct
 * repo_driver table over src/s3.c; nothing else in the engine changes.
 * Any thread. */
#include "error.h"
#include "repo_driver.h"

int repoS3Open(const char *url, void **drv, const struct repo_driver **ops, char *errmsg)
{
    *drv = NULL;
    *ops = NULL;
    errorf(errmsg, "repository %s: the S3 driver is not built yet", url);
    return CAIRN_EINVAL;
}
