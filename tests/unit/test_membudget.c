/* The node-wide byte budget (src/lib/membudget.c). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include "membudget.h"

static void test_take_within_limit_and_give_back(void **state)
{
    struct membudget b;
    (void)state;
    membudgetInit(&b, 100);
    assert_true(membudgetTake(&b, 60));
    assert_true(membudgetTake(&b, 40));
    assert_int_equal(membudgetHeld(&b), 100);
    /* Nothing taken when it does not fit, not even in part. */
    assert_false(membudgetTake(&b, 1));
    assert_int_equal(membudgetHeld(&b), 100);
    membudgetGive(&b, 60);
    assert_true(membudgetTake(&b, 50));
    assert_int_equal(membudgetHeld(&b), 90);
    /* More than the whole limit never fits, and is not waited for. */
    membudgetGive(&b, 90);
    assert_false(membudgetTake(&b, 101));
    assert_false(membudgetTakeWait(&b, 101, 10000));
    assert_int_equal(membudgetHeld(&b), 0);
}

static void test_force_counts_past_the_limit(void **state)
{
    struct membudget b;
    (void)state;
    membudgetInit(&b, 10);
    membudgetForce(&b, 25);
    assert_int_equal(membudgetHeld(&b), 25);
    assert_false(membudgetTake(&b, 1));
    /* A wait that finds no room gives up after its time. */
    assert_false(membudgetTakeWait(&b, 1, 30));
    membudgetGive(&b, 25);
    assert_true(membudgetTakeWait(&b, 10, 30));
}

static void test_no_limit_takes_everything(void **state)
{
    struct membudget b;
    (void)state;
    membudgetInit(&b, 0);
    assert_true(membudgetTake(&b, UINT64_MAX / 2));
    assert_int_equal(membudgetHeld(&b), UINT64_MAX / 2);
}

static void test_default_is_at_least_the_floor(void **state)
{
    (void)state;
    assert_true(membudgetDefault() >= (64ULL << 20));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_take_within_limit_and_give_back),
        cmocka_unit_test(test_force_counts_past_the_limit),
        cmocka_unit_test(test_no_limit_takes_everything),
        cmocka_unit_test(test_default_is_at_least_the_floor),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
