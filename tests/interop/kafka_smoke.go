// Kafka through the Go client Debian packages (Shopify/sarama): metadata, an
// admin topic of two partitions, a keyed produce, a fetch from the oldest
// offset, the topic deleted. Prints one line per step for the test to check.
package main

import (
	"fmt"
	"os"
	"time"

	"github.com/Shopify/sarama"
)

func check(err error) {
	if err != nil {
		panic(err)
	}
}

func main() {
	config := sarama.NewConfig()
	config.Version = sarama.V2_0_0_0
	config.Producer.Return.Successes = true
	config.Producer.RequiredAcks = sarama.WaitForAll
	config.Producer.Partitioner = sarama.NewHashPartitioner
	brokers := []string{os.Args[1]}

	admin, err := sarama.NewClusterAdmin(brokers, config)
	check(err)
	check(admin.CreateTopic("go-topic", &sarama.TopicDetail{NumPartitions: 2, ReplicationFactor: 1}, false))

	client, err := sarama.NewClient(brokers, config)
	check(err)
	partitions, err := client.Partitions("go-topic")
	check(err)
	fmt.Println("partitions", len(partitions))

	producer, err := sarama.NewSyncProducerFromClient(client)
	check(err)
	partition, offset, err := producer.SendMessage(&sarama.ProducerMessage{
		Topic: "go-topic", Key: sarama.StringEncoder("order-7"), Value: sarama.StringEncoder("hello from go"),
		Headers: []sarama.RecordHeader{{Key: []byte("source"), Value: []byte("sarama")}},
	})
	check(err)
	fmt.Println("produced", partition, offset)

	consumer, err := sarama.NewConsumerFromClient(client)
	check(err)
	reader, err := consumer.ConsumePartition("go-topic", partition, sarama.OffsetOldest)
	check(err)
	select {
	case message := <-reader.Messages():
		fmt.Printf("consumed %s %s %s=%s %d\n", message.Key, message.Value, message.Headers[0].Key,
			message.Headers[0].Value, message.Offset)
	case err := <-reader.Errors():
		panic(err)
	case <-time.After(20 * time.Second):
		panic("no message")
	}
	check(reader.Close())
	check(producer.Close())
	check(admin.DeleteTopic("go-topic"))
	fmt.Println("deleted")
	check(admin.Close())
}
