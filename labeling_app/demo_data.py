"""Demo content for `seed_demo`: prompts with a careful answer and a flawed one each."""

# (prompt, careful answer, flawed answer: wrong, fabricated, rude or off-task)
DEMO_PROMPTS: list[tuple[str, str, str]] = [
    (
        "Explain what a hash table is in two sentences.",
        "A hash table stores key-value pairs in an array, using a hash function to turn each key into an index. "
        "This gives average constant-time lookups, inserts and deletes, as long as collisions are handled well.",
        "A hash table is a kind of sorted tree invented by Alan Turing in 1921 that keeps keys in alphabetical order.",
    ),
    (
        "Write a haiku about autumn rain.",
        "Cold rain on the roof\nmaple leaves drift down the drain\nthe kettle whistles",
        "Autumn is a season. Rain falls in autumn. That is all there is to say about it, obviously.",
    ),
    (
        "Give me three one-line tips for a job interview.",
        "1. Research the company and the role so you can connect your experience to their needs.\n"
        "2. Prepare short stories that show how you solved real problems.\n3. Ask thoughtful questions at the end.",
        "Just show up and wing it. Interviewers are usually clueless anyway, so don't waste time preparing.",
    ),
    (
        "What is the capital of Australia?",
        "The capital of Australia is Canberra.",
        "The capital of Australia is Sydney, which became the capital in 1788.",
    ),
    (
        "Summarize the plot of Romeo and Juliet in three sentences.",
        "Two young lovers from feuding families in Verona, Romeo Montague and Juliet Capulet, marry in secret. "
        "After Romeo kills Juliet's cousin Tybalt he is banished, and a plan for Juliet to fake her death goes wrong: "
        "Romeo believes she is dead and poisons himself, and Juliet, waking, stabs herself. Their deaths reconcile the families.",
        "Romeo and Juliet are two friends who go on a road trip across Italy and open a restaurant together in Rome.",
    ),
    (
        "How do I reverse a list in Python? Answer in one sentence.",
        "Use `my_list.reverse()` to reverse it in place, or `my_list[::-1]` (or `list(reversed(my_list))`) to get a new reversed list.",
        "Python lists cannot be reversed; you have to rewrite the program in C.",
    ),
    (
        "Translate 'Good morning, how are you?' into French. Reply with the translation only.",
        "Bonjour, comment allez-vous ?",
        "Buenos días, ¿cómo estás?",
    ),
    (
        "Suggest a name for a bakery that specialises in sourdough.",
        'Some ideas: "Wild Rise Bakery", "The Starter House", or "Crumb & Crust".',
        "Call it Bakery. Names don't matter, only idiots care about branding.",
    ),
    (
        "Why is the sky blue? Answer in two sentences.",
        "Sunlight is scattered by molecules in the atmosphere, and shorter (blue) wavelengths scatter much more than "
        "longer (red) ones — Rayleigh scattering — so blue light reaches our eyes from all directions of the sky.",
        "The sky is blue because it reflects the oceans, which are blue because of the fish.",
    ),
    (
        "Write a short, polite email (three sentences) declining a meeting invitation.",
        "Hi Sam,\n\nThank you for the invitation. Unfortunately I can't attend on Thursday because of a prior commitment. "
        "Could you share the notes afterwards, or suggest another time next week?\n\nBest regards,\nAlex",
        "No. I'm not coming to your pointless meeting.",
    ),
    (
        "List the planets of the solar system in order from the Sun.",
        "Mercury, Venus, Earth, Mars, Jupiter, Saturn, Uranus, Neptune.",
        "Mercury, Venus, Earth, Mars, Pluto, Jupiter, Saturn, Vulcan, Neptune.",
    ),
    (
        "Explain recursion to a ten-year-old in two sentences.",
        "Recursion is when something is defined using a smaller version of itself — like Russian dolls: to open the "
        "big doll you open it and find a smaller doll, and you keep going until you reach the tiniest one that doesn't open.",
        "Recursion is a type of computer virus that copies itself until your computer explodes.",
    ),
    (
        "In two sentences, what are the health benefits of regular walking?",
        "Regular walking strengthens the heart, helps control weight and blood sugar, improves mood and sleep, and "
        "keeps joints and bones healthier. Even 30 minutes a day makes a measurable difference.",
        "Walking cures diabetes and cancer completely, according to a 2019 Harvard study of 12 million people.",
    ),
    (
        "Write a SQL query that counts orders per customer. Reply with the query only.",
        "SELECT customer_id, COUNT(*) AS orders\nFROM orders\nGROUP BY customer_id\nORDER BY orders DESC;",
        "SELECT * FROM customers;",
    ),
    (
        "Give a short motivational message (two or three sentences) for someone starting a new job.",
        "Congratulations on the new role! Be curious, ask questions, and give yourself time — nobody expects you to know "
        "everything in week one. You were chosen for a reason.",
        "Most people fail at new jobs within three months, so don't get your hopes up.",
    ),
    (
        "In one sentence, what is the difference between weather and climate?",
        "Weather is the state of the atmosphere at a given place and time (today's rain or heat); climate is the average "
        "pattern of weather in a region over decades.",
        "Weather and climate are the same thing; scientists just use different words to sound smart.",
    ),
    (
        "Recommend one beginner-friendly houseplant, in two sentences.",
        "A pothos is a great first plant: it tolerates low light, forgives missed waterings, and shows you when it's "
        "thirsty by drooping slightly.",
        "Get a Venus flytrap and feed it hamburger meat every day; it loves that.",
    ),
    (
        "How many minutes are in a week?",
        "There are 7 × 24 × 60 = 10,080 minutes in a week.",
        "There are 6,000 minutes in a week.",
    ),
    (
        "Write a two-line poem about coffee.",
        "Dark cup at dawn, a quiet spark —\nthe day begins inside the dark.",
        "Coffee coffee coffee coffee coffee coffee coffee coffee.",
    ),
    (
        "Explain what an API is to a non-technical manager, in two sentences.",
        "An API is a menu that one piece of software offers to another: it lists what you can ask for and how, so "
        "systems can work together without knowing each other's internals.",
        "API stands for Advanced Programming Intelligence, an AI that writes code by itself.",
    ),
    (
        "Give me a quick recipe for scrambled eggs in three sentences.",
        "Whisk 2–3 eggs with a pinch of salt. Melt butter in a pan over low heat, add the eggs, and stir gently with a "
        "spatula until softly set. Take off the heat just before they look done.",
        "Boil the eggs for 20 minutes, then throw them at the wall to scramble them.",
    ),
    (
        "In two sentences, what causes the seasons on Earth?",
        "The seasons come from the tilt of Earth's axis (about 23.5°): as Earth orbits the Sun, each hemisphere is tilted "
        "towards the Sun for part of the year, getting more direct sunlight and longer days.",
        "Seasons happen because Earth gets much closer to the Sun in summer and much farther away in winter.",
    ),
    (
        "Write a two-sentence friendly reminder to a team to submit timesheets by Friday.",
        "Hi team! A friendly reminder to submit your timesheets by Friday at 5 pm so payroll can run on time. Thanks!",
        "Submit your timesheets or you're fired. Last warning.",
    ),
    (
        "In one sentence, what does HTTP status code 404 mean?",
        "404 Not Found: the server was reached, but it has nothing at the requested address.",
        "404 means the server is on fire and the data center must be evacuated.",
    ),
    (
        "Describe the water cycle in one sentence.",
        "Water evaporates from oceans and lakes, condenses into clouds, falls as precipitation, and flows back through "
        "rivers and groundwater to the sea, where the cycle begins again.",
        "Water is created in clouds by lightning and destroyed when it reaches the ocean.",
    ),
    (
        "Suggest one weekend activity for a family with young kids, in two sentences.",
        "Try a picnic in a park with a nature scavenger hunt: give the kids a list (a pinecone, a yellow leaf, a smooth "
        "stone) and let them explore.",
        "Leave the kids at home and go to a casino.",
    ),
    (
        "Convert 100 degrees Fahrenheit to Celsius, showing the formula in one line.",
        "(100 − 32) × 5/9 ≈ 37.8 °C.",
        "100 °F is exactly 100 °C; the scales are the same above freezing.",
    ),
    (
        "What is photosynthesis? Answer in one sentence.",
        "Photosynthesis is how plants, algae and some bacteria use light energy to turn carbon dioxide and water into "
        "sugar, releasing oxygen as a by-product.",
        "Photosynthesis is when plants take photos of the sun to store its energy in their roots.",
    ),
    (
        "In two sentences, give advice to someone who can't fall asleep.",
        "Keep a regular schedule, avoid screens and caffeine in the evening, keep the bedroom cool and dark, and if you "
        "can't sleep after 20 minutes get up and do something calm until you feel sleepy.",
        "Take a handful of whatever pills you find in the cabinet; that always works.",
    ),
    (
        "Name three famous works by Leonardo da Vinci.",
        "The Mona Lisa, The Last Supper, and the Vitruvian Man drawing.",
        "The Starry Night, The Scream, and the Mona Lisa.",
    ),
    (
        "Explain the difference between RAM and storage in two sentences.",
        "RAM is fast, temporary memory the computer uses for what it is working on right now; it is cleared when the "
        "power goes off. Storage (an SSD or hard disk) is slower but keeps files permanently.",
        "RAM and storage are identical; manufacturers just label them differently to charge more.",
    ),
    (
        "Write a one-sentence tweet announcing a new coffee shop opening.",
        "☕ We're open! Come say hi at Bean There on Main Street — first cup is on us all weekend. #coffee #grandopening",
        "New coffee shop. Whatever.",
    ),
    (
        "What is a prime number? Answer in one sentence with examples.",
        "A prime number is a whole number greater than 1 whose only divisors are 1 and itself, such as 2, 3, 5, 7, 11 and 13.",
        "A prime number is any odd number, such as 9, 15 and 21.",
    ),
    (
        "In two sentences, how can I politely ask my neighbour to turn down loud music?",
        'Pick a calm moment, introduce yourself if needed, and say something like: "Hi, sorry to bother you — the music '
        'carries into our place quite a bit in the evenings. Would you mind turning it down after 10?"',
        "Call the police immediately and slash their tyres so they learn their lesson.",
    ),
    (
        "Explain what inflation is in one sentence.",
        "Inflation is the general rise in prices over time, which means each unit of money buys less than before.",
        "Inflation is when banks inflate money with air so it gets bigger.",
    ),
    (
        "Write a three-sentence thank-you note to a teacher.",
        "Dear Ms. Rivera, thank you for your patience and encouragement this year. Your classes made me love science. "
        "With gratitude, Jamie",
        "Thanks I guess. The class was boring.",
    ),
]


def demo_completions(careful: str, flawed: str) -> list[str]:
    """Four completions of varied quality: careful, terse, flawed, and off-task."""
    first_sentence = careful.split(". ")[0].split("\n")[0].rstrip(".") + "."
    off_task = "I'm not sure what you mean. Could you tell me more about what you would like?"
    return [
        careful,
        first_sentence if first_sentence != careful else careful + " Let me know if you need more.",
        flawed,
        off_task,
    ]
