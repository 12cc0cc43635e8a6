# Policy engine benchmark: decisions per second over a generated 200-rule policy.
add_executable(policy_bench ${CMAKE_CURRENT_LIST_DIR}/bench_util.c ${CMAKE_CURRENT_LIST_DIR}/policy_bench.c)
target_link_libraries(policy_bench PRIVATE psc_policy)
target_compile_definitions(policy_bench PRIVATE PSC_SOURCE_DIR="${CMAKE_SOURCE_DIR}")
