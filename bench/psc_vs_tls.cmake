# psc_vs_tls: PSC (a real psc-kmsd + libpscpeer) against a TLS 1.3 and a DTLS 1.2
# mesh for N = 4..256 members (bench/psc_vs_tls.sh runs it, plots, writes the doc).
# It installs a KMS with the integration fixture's scripts, so it needs the test
# support library (PSC_TESTS=ON) and the daemon; without them it is skipped.
# `bench.psc_vs_tls.quick` (label bench) proves it still runs: N = 4, 10 messages,
# fails only if a message was not delivered and opened, never on time.
if(TARGET psc_testsupport AND TARGET psc-kmsd AND TARGET psc-kmsctl AND TARGET pscpeer_static
   AND TARGET psc-relay)
  find_package(Threads REQUIRED)
  add_executable(psc_vs_tls ${CMAKE_CURRENT_LIST_DIR}/bench_util.c ${CMAKE_CURRENT_LIST_DIR}/bench_pki.c
    ${CMAKE_CURRENT_LIST_DIR}/psc_vs_tls.c ${CMAKE_CURRENT_LIST_DIR}/psc_vs_tls_mesh.c
    ${CMAKE_CURRENT_LIST_DIR}/psc_vs_tls_pki.c)
  target_link_libraries(psc_vs_tls PRIVATE psc_testsupport pscpeer_static psc_proto
    PkgConfig::ZMQ PkgConfig::OPENSSL Threads::Threads m)
  add_dependencies(psc_vs_tls psc-kmsd psc-kmsctl psc-relay)
  add_test(NAME bench.psc_vs_tls.quick COMMAND psc_vs_tls --quick)
  set_tests_properties(bench.psc_vs_tls.quick PROPERTIES LABELS bench TIMEOUT 300)
endif()
