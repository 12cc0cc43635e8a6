# seal_bench: group message protection (peer-sdk/psc_seal.c) beside raw AES-256-GCM.
add_executable(seal_bench ${CMAKE_CURRENT_LIST_DIR}/bench_util.c ${CMAKE_CURRENT_LIST_DIR}/seal_bench.c)
target_include_directories(seal_bench PRIVATE ${CMAKE_SOURCE_DIR}/peer-sdk)
target_link_libraries(seal_bench PRIVATE pscpeer_static psc_proto m)
target_compile_definitions(seal_bench PRIVATE PSC_SOURCE_DIR="${CMAKE_SOURCE_DIR}")
