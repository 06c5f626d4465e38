#lang racket/base
;; A program that holds a broker listener and waits to be killed: test_racket_dropin.py kills it
;; with SIGKILL and checks that the broker closed its listener at once (the session attachment).
(require sockbroker/tcp)
(define listener (tcp-listen 0 4 #t "127.0.0.1"))
(define-values (_host port _remote _remote-port) (tcp-addresses listener #t))
(printf "~a\n" port)
(flush-output)
(sync never-evt)
