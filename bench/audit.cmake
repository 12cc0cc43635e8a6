# audit_bench: audit log records/s, fdatasync per record vs group commit, beside a
# bare write+fdatasync loop of the same bytes. `audit_bench --update-doc` rewrites
# its section of docs/benchmarks.md.
if(TARGET psc_audit)
  add_executable(audit_bench ${CMAKE_CURRENT_LIST_DIR}/bench_util.c ${CMAKE_CURRENT_LIST_DIR}/audit_bench.c)
  target_link_libraries(audit_bench PRIVATE psc_audit)
  target_compile_definitions(audit_bench PRIVATE PSC_SOURCE_DIR="${CMAKE_SOURCE_DIR}")
endif()
