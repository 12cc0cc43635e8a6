# hsm_bench: psc_hsm operations against the same PKCS#11 calls in a bare loop.
if(TARGET psc_hsm)
  add_executable(hsm_bench ${CMAKE_CURRENT_LIST_DIR}/bench_util.c ${CMAKE_CURRENT_LIST_DIR}/hsm_bench.c)
  target_link_libraries(hsm_bench PRIVATE psc_hsm ${CMAKE_DL_LIBS})
  target_compile_definitions(hsm_bench PRIVATE
    PSC_SOURCE_DIR="${CMAKE_SOURCE_DIR}"
    PSC_SOFTHSM_MODULE="${PSC_SOFTHSM_MODULE}")
endif()
