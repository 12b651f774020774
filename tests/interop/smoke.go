// The same story as Smoke.java, told by the Go client (amqp091-go).
package main

import (
	"fmt"
	"os"
	"sort"
	"strings"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"
)

func main() {
	conn, err := amqp.Dial("amqp://guest:guest@127.0.0.1:" + os.Args[1] + "/")
	if err != nil {
		panic(err)
	}
	defer conn.Close()
	fmt.Println("server", conn.Properties["product"], conn.Properties["version"])
	ch, err := conn.Channel()
	if err != nil {
		panic(err)
	}
	q, err := ch.QueueDeclare("", false, true, true, false, amqp.Table{"x-max-priority": int32(5)})
	if err != nil {
		panic(err)
	}
	if err := ch.Confirm(false); err != nil {
		panic(err)
	}
	confirms := ch.NotifyPublish(make(chan amqp.Confirmation, 3))
	for i := 0; i < 3; i++ {
		msg := amqp.Publishing{Priority: uint8(i), Body: []byte(fmt.Sprintf("m%d", i)),
			Headers: amqp.Table{"n": int32(i), "s": "x"}}
		if err := ch.Publish("", q.Name, false, false, msg); err != nil {
			panic(err)
		}
	}
	for i := 0; i < 3; i++ {
		if c := <-confirms; !c.Ack {
			panic("nacked")
		}
	}
	d, ok, err := ch.Get(q.Name, false)
	if err != nil || !ok {
		panic("get failed")
	}
	keys := make([]string, 0)
	for k, v := range d.Headers {
		keys = append(keys, fmt.Sprintf("%s=%v", k, v))
	}
	sort.Strings(keys)
	fmt.Printf("get %s left %d prio %d headers {%s}\n", d.Body, d.MessageCount, d.Priority, strings.Join(keys, ", "))
	d.Nack(false, true)
	ch.Qos(10, 0, false)
	deliveries, err := ch.Consume(q.Name, "", false, false, false, false, nil)
	if err != nil {
		panic(err)
	}
	got := []string{}
	timeout := time.After(3 * time.Second)
	for len(got) < 3 {
		select {
		case m := <-deliveries:
			s := string(m.Body)
			if m.Redelivered {
				s += "*"
			}
			got = append(got, s)
			m.Ack(false)
		case <-timeout:
			panic("timed out")
		}
	}
	fmt.Println("consumed", got)
	_, err = ch.QueueDeclarePassive("missing-"+q.Name, false, true, true, false, nil)
	if e, ok := err.(*amqp.Error); ok {
		fmt.Println("passive:", e.Code)
	}
}
