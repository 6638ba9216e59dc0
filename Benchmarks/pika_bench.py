"""The baseline for broker-bench: the same measurements with pika, a plain Python client.

Prints one JSON object per measurement, like the Swift benchmark.
"""
import argparse
import json
import time
import uuid

import pika


def report(case, count, seconds):
    print(json.dumps({"client": "pika", "case": case, "messages": count,
                      "seconds": round(seconds, 3), "rate": round(count / seconds)}), flush=True)


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--url", default="amqp://guest:guest@127.0.0.1:31500/%2F")
    parser.add_argument("--messages", type=int, default=5000)
    parser.add_argument("--size", type=int, default=512)
    parser.add_argument("--prefetch", type=int, default=100)
    args = parser.parse_args()

    connection = pika.BlockingConnection(pika.URLParameters(args.url))
    channel = connection.channel()
    channel.confirm_delivery()
    queue = f"bench.pika.{uuid.uuid4().hex[:8]}"
    channel.queue_declare(queue=queue, durable=True)
    body = b"x" * args.size
    properties = pika.BasicProperties(content_type="application/octet-stream", delivery_mode=2)

    start = time.monotonic()
    for _ in range(args.messages):
        # With confirm_delivery, basic_publish returns once the broker confirmed (or raises).
        channel.basic_publish(exchange="", routing_key=queue, body=body, properties=properties)
    report("publish_confirm_sequential", args.messages, time.monotonic() - start)

    channel.basic_qos(prefetch_count=args.prefetch)
    received = 0
    start = time.monotonic()
    for method, _properties, _body in channel.consume(queue):
        channel.basic_ack(method.delivery_tag)
        received += 1
        if received == args.messages:
            break
    report("consume_ack", args.messages, time.monotonic() - start)
    channel.cancel()
    channel.queue_delete(queue)
    connection.close()


if __name__ == "__main__":
    main()
