add_executable(proto_bench ${CMAKE_CURRENT_LIST_DIR}/bench_util.c ${CMAKE_CURRENT_LIST_DIR}/proto_bench.c
  ${CMAKE_SOURCE_DIR}/tests/support/proto_samples.c)
target_include_directories(proto_bench PRIVATE ${CMAKE_SOURCE_DIR}/tests/support)
target_link_libraries(proto_bench PRIVATE psc_proto m)
target_compile_definitions(proto_bench PRIVATE PSC_SOURCE_DIR="${CMAKE_SOURCE_DIR}")
