# Setup CPU vs group size, log-log, from psc_vs_tls --data (bench/psc_vs_tls.sh).
# Usage: gnuplot -e "data='FILE'; out='docs/psc_vs_tls.png'" bench/psc_vs_tls.gp
set terminal pngcairo size 900,600 font ",11" noenhanced
set output out
set title "Setup CPU of every process until every member can send (bench/psc_vs_tls)"
set xlabel "group members N"
set ylabel "CPU seconds (log)"
set logscale xy
set xtics (4, 16, 64, 256)
set grid
set key top left
set style data linespoints
plot data using 1:4 title "TLS 1.3 mesh (N(N-1)/2 handshakes)" lw 2 pt 7, \
     data using 1:5 title "DTLS 1.2 mesh" lw 2 pt 5, \
     data using 1:2 title "PSC, whole setup, direct channel (N(N-1) ZeroMQ connections)" lw 2 pt 9, \
     data using 1:7 title "PSC, whole setup, channel via psc-relay (2N connections)" lw 2 pt 15, \
     data using 1:3 title "PSC, members join one by one (keys only)" lw 2 pt 11, \
     data using 1:6 title "PSC, Establish + every Refresh only" lw 2 pt 13
