# kms_bench: psc-kmsd end to end (joins/s, join latency, 1,000-member rekey)
# beside the bare HSM / signature / fsync loops, in one run. It drives a real
# psc-kmsd over ZeroMQ with tests/integration/rawpeer.c, so it needs the test
# support library (PSC_TESTS=ON) and the daemon; without them it is skipped.
if(TARGET psc_testsupport AND TARGET psc-kmsd AND TARGET psc-kmsctl AND TARGET psc_hsm)
  find_package(Threads REQUIRED)
  add_executable(kms_bench ${CMAKE_CURRENT_LIST_DIR}/bench_util.c ${CMAKE_CURRENT_LIST_DIR}/bench_pki.c ${CMAKE_CURRENT_LIST_DIR}/kms_bench.c
    ${CMAKE_SOURCE_DIR}/tests/integration/rawpeer.c)
  target_include_directories(kms_bench PRIVATE ${CMAKE_SOURCE_DIR}/tests/integration)
  target_link_libraries(kms_bench PRIVATE psc_testsupport psc_hsm psc_proto
    PkgConfig::ZMQ PkgConfig::OPENSSL PkgConfig::SQLITE Threads::Threads m)
  add_dependencies(kms_bench psc-kmsd psc-kmsctl)
endif()
